"""selfsup.chem.retro.core: the torch-free core of retrosynthesis.

Reactions and rdchiral templates (``reactions``), synthesis routes (``routes``), the
building-block stock (``stock``), the single-step model base classes (``single_step``), Retro*
search (``search``) and hand-made toy reaction worlds (``toy``).

Imports: the standard library, numpy, RDKit/rdchiral and selfsup's core layer only; no torch at
module level and nothing from the other retro sub-packages (``models``, ``training``,
``workflows``). This ``__init__`` imports nothing, so importing a core module stays light.
"""
