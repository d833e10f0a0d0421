"""selfsup.chem.retro.models: the neural retrosynthesis models (torch).

The template-classifier MLP and its forward twin (``mlp``) and Retro*'s value network
(``value``).

Imports: :mod:`selfsup.chem.retro.core` and this sub-package; never ``workflows``, and
``training`` only for one known exception: ``mlp`` and ``value`` take ``morgan_fingerprints``
from ``training.templates_data`` (listed in ``tests/test_imports.py``). This ``__init__``
imports nothing, so torch loads only with a model module.
"""
