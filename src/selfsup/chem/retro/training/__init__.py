"""selfsup.chem.retro.training: training the single-step model.

USPTO-50k template training data and fingerprints (``templates_data``), the training of the
template MLP (``train_single_step``: config, loop, start and resume), its fine-tuning
(``fine_tune``) and its accuracy metrics (``metrics``).

Imports: :mod:`selfsup.chem.retro.core`, :mod:`selfsup.chem.retro.models` and this
sub-package; never ``workflows``. This ``__init__`` imports nothing.
"""
