"""selfsup.chem.retro.training: training the single-step model.

USPTO-50k template training data and fingerprints (``templates_data``) and the training,
fine-tuning and evaluation of the template MLP (``train_single_step``).

Imports: :mod:`selfsup.chem.retro.core`, :mod:`selfsup.chem.retro.models` and this
sub-package; never ``workflows``. This ``__init__`` imports nothing.
"""
