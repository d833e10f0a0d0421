"""selfsup.chem.retro.models: the neural retrosynthesis models (torch).

The template-classifier MLP and its forward twin (``mlp``, with the loaders of a saved model
and of a finished training run's model) and Retro*'s value network (``value``).

Imports: :mod:`selfsup.chem.retro.core` (fingerprints, reactions, the single-step bases) and
this sub-package; never ``training`` or ``workflows``. This ``__init__`` imports nothing, so
torch loads only with a model module.
"""
