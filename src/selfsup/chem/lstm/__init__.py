"""The SMILES LSTM, GEGL's apprentice, and its training: one room for the generative model.

- :mod:`.model`: :class:`SmilesLSTM` (embedding -> LSTM -> head), its config, sampling, the
  checkpoint file, :func:`encode_smiles`;
- :mod:`.corpus`: the pretraining corpus (load, subset, canonicalise, split, vocabulary, encode);
- :mod:`.metrics`: validity, uniqueness and novelty of samples;
- :mod:`.likelihood`: the maximum-likelihood step (:func:`train_likelihood`, GEGL's imitation)
  and the gradient step every loop that trains the model shares;
- :mod:`.training`: the pretraining configs and loop, on Lightning Fabric (device and precision),
  with checkpoints and exact resume (:func:`pretrain`, :func:`resume`: ``selfsup chem pretrain``).

Each module imports only the ones above it in this list (never this package), so there is no
import cycle inside the room.
"""

from .corpus import load_corpus
from .likelihood import train_likelihood
from .metrics import sample_metrics
from .model import (
    CHECKPOINT_FORMAT,
    EncodedSmiles,
    SampleBatch,
    SmilesLSTM,
    SmilesLSTMConfig,
    encode_smiles,
)
from .training import PretrainConfig, pretrain, resume

__all__ = [
    "CHECKPOINT_FORMAT",
    "EncodedSmiles",
    "PretrainConfig",
    "SampleBatch",
    "SmilesLSTM",
    "SmilesLSTMConfig",
    "encode_smiles",
    "load_corpus",
    "pretrain",
    "resume",
    "sample_metrics",
    "train_likelihood",
]
