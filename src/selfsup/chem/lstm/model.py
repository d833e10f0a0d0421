"""SMILES LSTM: the apprentice of GEGL (Ahn et al., NeurIPS 2020), a character-level language model.

The model reads ``<bos> t_1 ... t_n <eos>`` and predicts every next token:

    tokens (B, T) -> embedding (B, T, E) -> LSTM, n_layers x H, dropout between layers (B, T, H)
    -> dropout -> linear head (B, T, V) logits of the next token

Paper apprentice: 3 layers x 1024 hidden units, dropout 0.2, pretrained by maximum likelihood on
ZINC250k (logP tasks) or ChEMBL (GuacaMol). The likelihood of a SMILES is the product of its
next-token probabilities, ``log p(x) = sum_t log p(x_t | x_<t)`` with ``x_0 = <bos>`` and the last
target ``<eos>``; padding after ``<eos>`` is masked.

The ``<pad>``, ``<bos>`` and ``<unk>`` columns of the logits are fixed at ``-inf``: they are never
a target, so the model is a distribution over real next tokens only, the sampler never emits them
and the log-probabilities the sampler reports equal :meth:`SmilesLSTM.log_likelihood` of its
tokens (what REINVENT-style policy gradients need).

Model file only: the corpus is :mod:`.corpus`, the maximum-likelihood step :mod:`.likelihood`,
the pretraining loop :mod:`.training`, sample metrics :mod:`.metrics` (all in
:mod:`selfsup.chem.lstm`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.chem.molecules import Vocabulary, tokenize
from selfsup.errors import InputError
from selfsup.io import atomic_torch_save, safe_torch_load

__all__ = [
    "CHECKPOINT_FORMAT",
    "EncodedSmiles",
    "SampleBatch",
    "SmilesLSTM",
    "SmilesLSTMConfig",
    "encode_smiles",
]

CHECKPOINT_FORMAT = "selfsup.smiles_lstm"
CHECKPOINT_VERSION = 1

# The special ids every selfsup Vocabulary uses (see Vocabulary.SPECIALS).
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


@dataclass(frozen=True)
class SmilesLSTMConfig:
    """Sizes of the SMILES LSTM. Defaults are GEGL's apprentice (3 x 1024, dropout 0.2).

    The embedding size is not given in the paper; 256 is used here.
    """

    vocab_size: int
    embed_dim: int = 256
    hidden_dim: int = 1024
    n_layers: int = 3
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if self.vocab_size <= UNK_ID + 1:
            raise InputError(
                f"vocab_size={self.vocab_size} is too small: the vocabulary holds 4 special "
                "tokens plus at least one SMILES token; build it with Vocabulary.build(corpus)"
            )
        for name in ("embed_dim", "hidden_dim", "n_layers"):
            if getattr(self, name) < 1:
                raise InputError(f"SmilesLSTMConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"SmilesLSTMConfig.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class SampleBatch:
    """What :meth:`SmilesLSTM.sample` returns with ``return_details=True``.

    ``tokens`` (n, T) hold ``<bos>`` then the sampled ids, ``<eos>`` and ``<pad>`` after it: the
    input :meth:`SmilesLSTM.log_likelihood` takes (recompute it with gradients for a policy
    gradient). ``log_probs`` (n,) are the model's log-likelihoods of those tokens (temperature
    1, no gradient). ``finished`` (n,) is False where ``max_len`` cut a sequence before ``<eos>``.
    """

    smiles: list[str]
    tokens: torch.Tensor
    log_probs: torch.Tensor
    finished: torch.Tensor


@dataclass
class EncodedSmiles:
    """A padded batch of encoded SMILES from :func:`encode_smiles`.

    ``tokens`` (N, T): ``<bos> ids <eos> <pad>...``; ``lengths`` (N,): ids before the padding;
    ``index``: position in the input list of each row; ``skipped``: SMILES left out, by reason.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    index: list[int]
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def __len__(self) -> int:
        return len(self.index)


def encode_smiles(
    smiles: Sequence[str],
    vocab: Vocabulary,
    max_len: int | None = None,
    dtype: torch.dtype = torch.long,
    cache: dict[str, list[int] | str] | None = None,
) -> EncodedSmiles:
    """Encode a list of SMILES into one padded tensor, skipping and counting what cannot be encoded.

    Skipped: SMILES that do not tokenize (``untokenizable``), that hold a token outside
    ``vocab`` (``unknown_token``) or, with ``max_len``, whose tokens plus ``<eos>`` exceed
    ``max_len`` (``too_long``; the same count as :meth:`SmilesLSTM.sample`'s ``max_len``).
    ``dtype`` may be narrower (``torch.int16``) to hold a large corpus; cast batches with
    ``.long()``. ``cache`` (a dict kept by the caller for one ``vocab`` and ``max_len``) holds the
    ids, or the skip reason, of each SMILES already seen, so a loop that encodes overlapping lists
    (GEGL's queues, every round) tokenises each SMILES once; the result is the same.
    """
    rows: list[list[int]] = []
    index: list[int] = []
    skipped = {"untokenizable": 0, "unknown_token": 0, "too_long": 0}
    for i, s in enumerate(smiles):
        row = cache.get(s) if cache is not None else None
        if row is None:
            row = _encode_one(s, vocab, max_len)
            if cache is not None:
                cache[s] = row
        if isinstance(row, str):
            skipped[row] += 1
            continue
        rows.append(row)
        index.append(i)
    width = max((len(r) for r in rows), default=2)
    pad = [vocab.pad_id] * width
    padded = [r + pad[len(r):] for r in rows]
    out = torch.tensor(padded, dtype=dtype).view(len(rows), width)  # (N, T)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)  # (N,)
    return EncodedSmiles(tokens=out, lengths=lengths, index=index, skipped=skipped)


def _encode_one(s: str, vocab: Vocabulary, max_len: int | None) -> list[int] | str:
    """``[<bos>, ids..., <eos>]`` of one SMILES, or why :func:`encode_smiles` skips it."""
    try:
        toks = tokenize(s)
    except InputError:
        return "untokenizable"
    if not toks:
        return "untokenizable"
    if any(t not in vocab for t in toks):
        return "unknown_token"
    if max_len is not None and len(toks) + 1 > max_len:
        return "too_long"
    return [vocab.bos_id, *(vocab.token_to_id(t) for t in toks), vocab.eos_id]


class SmilesLSTM(nn.Module):
    """Embedding -> multi-layer LSTM -> linear head over the SMILES vocabulary."""

    def __init__(self, config: SmilesLSTMConfig) -> None:
        super().__init__()
        self.config = config
        v, e, h = config.vocab_size, config.embed_dim, config.hidden_dim
        self.embed = nn.Embedding(v, e, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(
            e, h, num_layers=config.n_layers, batch_first=True,
            dropout=config.dropout if config.n_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(h, v)
        never = torch.zeros(v, dtype=torch.bool)
        never[[PAD_ID, BOS_ID, UNK_ID]] = True  # never a next token
        self.register_buffer("never_next", never, persistent=False)

    # ----------------------------------------------------------------------------- forward
    def forward(
        self,
        tokens: torch.Tensor,
        hidden: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """tokens (B, T) long -> next-token logits (B, T, V), hidden (h, c) each (L, B, H)."""
        x = self.embed(tokens)  # (B, T, E)
        x, hidden = self.lstm(x, hidden)  # (B, T, H); h, c: (L, B, H)
        logits = self.head(self.drop(x))  # (B, T, V)
        logits = logits.masked_fill(self.never_next, float("-inf"))  # (B, T, V)
        return logits, hidden

    def token_nll(self, tokens: torch.Tensor) -> torch.Tensor:
        """Negative log-probability of each target token: (B, T) -> (B, T-1), 0 at padding."""
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T-1) each
        logits, _ = self(inputs)  # (B, T-1, V)
        b, t, v = logits.shape
        nll = F.cross_entropy(
            logits.reshape(b * t, v), targets.reshape(b * t),
            ignore_index=PAD_ID, reduction="none",
        )  # (B*(T-1),)
        return nll.view(b, t)  # (B, T-1)

    def log_likelihood(self, tokens: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` of each padded sequence ``<bos> ... <eos> <pad>...``: (B, T) -> (B,)."""
        return -self.token_nll(tokens).sum(dim=1)  # (B,)

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """Maximum-likelihood loss: mean negative log-probability per (non-padding) target token."""
        nll = self.token_nll(tokens)  # (B, T-1)
        n_targets = (tokens[:, 1:] != PAD_ID).sum().clamp(min=1)
        return nll.sum() / n_targets

    # ---------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        n: int,
        vocab: Vocabulary,
        max_len: int = 100,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        batch_size: int | None = None,
        return_details: bool = False,
    ) -> list[str] | SampleBatch:
        """Sample ``n`` SMILES token by token (``<bos>`` first, stop at ``<eos>``).

        ``max_len`` is the most tokens generated per SMILES, ``<eos>`` included; longer ones are
        cut (and usually invalid). ``temperature`` divides the logits; 0 is greedy (argmax).
        Sampling runs in eval mode (no dropout) in chunks of ``batch_size`` (default all ``n``).
        With a fixed ``generator`` the result is deterministic; a generator on another device than
        the model draws there (slower). Returns the decoded SMILES, or a :class:`SampleBatch`
        with tokens and log-likelihoods when ``return_details``.
        """
        if n < 0 or max_len < 1:
            raise InputError(f"sample needs n >= 0 and max_len >= 1, got n={n}, max_len={max_len}")
        if temperature < 0:
            raise InputError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if len(vocab) != self.config.vocab_size:
            raise InputError(
                f"vocabulary of size {len(vocab)} does not match the model's vocab_size "
                f"{self.config.vocab_size}; pass the vocabulary saved with the model"
            )
        device = torch.device(device) if device is not None else self.head.weight.device
        chunk = max(1, batch_size or n or 1)
        was_training = self.training
        self.eval()
        try:
            parts = [
                self._sample_chunk(min(chunk, n - i), max_len, temperature, generator, device)
                for i in range(0, n, chunk)
            ]
        finally:
            self.train(was_training)
        width = max((p[0].shape[1] for p in parts), default=1)
        tokens = torch.full((n, width), PAD_ID, dtype=torch.long, device=device)  # (n, T)
        row = 0
        for toks, _, _ in parts:
            tokens[row : row + toks.shape[0], : toks.shape[1]] = toks
            row += toks.shape[0]
        if n == 0:
            tokens[:, 0] = BOS_ID
        log_probs = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, device=device)
        finished = (
            torch.cat([p[2] for p in parts]) if parts
            else torch.zeros(0, dtype=torch.bool, device=device)
        )
        smiles = [vocab.decode(r) for r in tokens[:, 1:].tolist()]
        if not return_details:
            return smiles
        return SampleBatch(smiles=smiles, tokens=tokens, log_probs=log_probs, finished=finished)

    def _sample_chunk(
        self,
        b: int,
        max_len: int,
        temperature: float,
        generator: torch.Generator | None,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch of ``b`` sequences -> tokens (b, 1+t), log_probs (b,), finished (b,).

        A sequence leaves the LSTM's batch once it has emitted ``<eos>`` (its later tokens are
        padding): the steps cost what the unfinished rows cost, not ``b`` rows until the longest
        ends (with the shipped 3 x 512 prior, 256 samples run 54% of the whole batch's row-steps;
        benchmarks/results/gegl_sampling_speed.md). The random draws stay those of the full
        batch (the next tokens are drawn from a (b, V) matrix whose finished rows are uniform and
        ignored), so a seeded sample equals the whole-batch sampler's up to the float rounding of
        the smaller matrix products (tokens equal in tests/test_chem_lstm.py)."""
        tok = torch.full((b, 1), BOS_ID, dtype=torch.long, device=device)  # (b, 1)
        out = [tok]
        log_probs = torch.zeros(b, device=device)  # (b,)
        finished = torch.zeros(b, dtype=torch.bool, device=device)  # (b,)
        active = torch.arange(b, device=device)  # rows still running
        hidden = None  # (h, c) of the active rows, each (L, a, H)
        v = self.config.vocab_size
        for _ in range(max_len):
            step_logits, hidden = self(tok[active], hidden)  # (a, 1, V)
            logits = torch.zeros(b, v, device=device)  # (b, V); finished rows: uniform
            logits[active] = step_logits[:, -1, :].float()
            if temperature == 0:
                nxt = logits.argmax(dim=-1)  # (b,)
            else:
                probs = F.softmax(logits / temperature, dim=-1)  # (b, V)
                if generator is not None and generator.device != probs.device:
                    probs = probs.to(generator.device)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
            step_lp = F.log_softmax(logits, dim=-1).gather(1, nxt[:, None]).squeeze(1)  # (b,)
            log_probs += torch.where(finished, torch.zeros_like(step_lp), step_lp)
            nxt = torch.where(finished, torch.full_like(nxt, PAD_ID), nxt)  # (b,)
            out.append(nxt[:, None])
            finished |= nxt == EOS_ID
            tok = nxt[:, None]  # (b, 1)
            if bool(finished.all()):
                break
            running = ~finished[active]  # (a,)
            if not bool(running.all()):
                active = active[running]
                hidden = (hidden[0][:, running], hidden[1][:, running])
        return torch.cat(out, dim=1), log_probs, finished  # (b, 1+t), (b,), (b,)

    # ------------------------------------------------------------------------- save / load
    def save(
        self, path: str | os.PathLike, vocab: Vocabulary, extra: dict[str, Any] | None = None
    ) -> Path:
        """Write ``{format, version, config, vocab, state_dict, extra}`` atomically.

        Everything in it is a tensor, dict, list, str, int, float or bool, so it loads with
        ``weights_only=True``; ``extra`` must hold only such values too.
        """
        if len(vocab) != self.config.vocab_size:
            raise InputError(
                f"vocabulary of size {len(vocab)} does not match the model's vocab_size "
                f"{self.config.vocab_size}; save the vocabulary the model was built with"
            )
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": asdict(self.config),
            "vocab": vocab.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "extra": dict(extra or {}),
        }
        return atomic_torch_save(payload, path)

    @classmethod
    def load(
        cls, path: str | os.PathLike, map_location: Any = "cpu"
    ) -> tuple[SmilesLSTM, Vocabulary]:
        """Inverse of :meth:`save`: ``(model in eval mode, vocabulary)``.

        Raises :class:`InputError` for a file that is not a SMILES LSTM checkpoint or that holds
        anything but plain data and tensors (it is never unpickled).
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no SMILES LSTM checkpoint at '{path}'; pass the model.pt of a run")
        try:
            data = safe_torch_load(path, map_location=map_location)
        except Exception as exc:
            raise InputError(
                f"'{path}' is not a safe SMILES LSTM checkpoint ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); only files written by "
                "SmilesLSTM.save are accepted"
            ) from exc
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            raise InputError(
                f"'{path}' is not a SMILES LSTM checkpoint (format "
                f"{data.get('format') if isinstance(data, dict) else type(data).__name__!r}); "
                "write it with SmilesLSTM.save"
            )
        if data.get("version") != CHECKPOINT_VERSION:
            raise InputError(
                f"'{path}' has checkpoint version {data.get('version')!r}; this selfsup reads "
                f"version {CHECKPOINT_VERSION}"
            )
        known = {f.name for f in fields(SmilesLSTMConfig)}
        raw = data.get("config")
        if not isinstance(raw, dict) or not set(raw) <= known:
            raise InputError(f"'{path}': malformed model config {raw!r}")
        config = SmilesLSTMConfig(**raw)
        vocab = Vocabulary.from_dict(data.get("vocab"))
        if len(vocab) != config.vocab_size:
            raise InputError(
                f"'{path}': vocabulary size {len(vocab)} != config vocab_size {config.vocab_size}"
            )
        model = cls(config)
        try:
            model.load_state_dict(data["state_dict"])
        except (KeyError, RuntimeError, TypeError) as exc:
            raise InputError(f"'{path}': weights do not fit the saved config: {exc}") from exc
        return model.eval(), vocab
