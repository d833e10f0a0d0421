"""The template-classifier MLP of Retro* and its forward twin (torch).

Backward (single-step retrosynthesis) model of Retro* (Chen et al., ICML 2020), also used by
self-improved Retro* (Kim et al., ICML 2021)::

    x = MorganFP(product)  (radius 2, 2048 bits)                 (B, 2048)
    h = Dropout(ELU(BatchNorm(W1 x + b1)))                        (B, 512)
    p(template | product) = softmax(W2 h + b2)                    (B, n_templates)

:class:`MLPSingleStepModel` wraps a trained :class:`TemplateMLP` and its template list as a
:class:`~selfsup.chem.retro.core.single_step.TemplateModel`: the base class applies the top-k
templates with rdchiral, merges identical reactant sets (probabilities summed) and renormalises.

Forward model for the forward augmentation of self-improvement: :class:`ForwardTemplateMLP`
(same architecture) reads the fingerprint of the reactant set and scores the same retro
templates; :class:`ForwardTemplateModel` applies the top templates in the forward direction
(``product>>reactants`` reversed into ``reactants>>product``, run with RDKit's
``rdChemReactions``) and returns canonical products.

Checkpoints (:meth:`MLPSingleStepModel.save`) hold only plain containers and tensors (format,
kind, config, template list, state_dict) and load with ``weights_only=True``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import rdChemReactions
from torch import nn

from selfsup.errors import InputError
from selfsup.io import atomic_torch_save, safe_torch_load

from ..core.fingerprints import morgan_fingerprints
from ..core.reactions import canonical_reactants
from ..core.single_step import TemplateModel

__all__ = [
    "CHECKPOINT_FORMAT",
    "ForwardPrediction",
    "ForwardTemplateMLP",
    "ForwardTemplateModel",
    "MLPSingleStepModel",
    "TemplateMLP",
    "apply_forward_template",
    "load_template_model",
    "load_trained_model",
    "predict_probabilities",
    "reverse_template",
]

CHECKPOINT_FORMAT = "selfsup.template_mlp/1"


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------


class TemplateMLP(nn.Module):
    """Fingerprint ``(B, fp_dim)`` -> template logits ``(B, n_templates)``.

    Linear(fp_dim, hidden) -> BatchNorm1d -> ELU -> Dropout(dropout) -> Linear(n_templates);
    Retro* uses fp_dim 2048, hidden 512, dropout 0.3-0.4. Input is a 0/1 fingerprint of any
    numeric dtype (converted to the weights' dtype: float32 but in Lightning's 16-, bf16- or
    64-true precision). Apply ``softmax`` to the logits for probabilities.
    """

    kind = "backward"

    def __init__(
        self, n_templates: int, fp_dim: int = 2048, hidden: int = 512, dropout: float = 0.3
    ) -> None:
        super().__init__()
        if n_templates < 1:
            raise InputError(f"n_templates must be >= 1, got {n_templates}")
        self.n_templates = int(n_templates)
        self.fp_dim = int(fp_dim)
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.body = nn.Sequential(
            nn.Linear(self.fp_dim, self.hidden),
            nn.BatchNorm1d(self.hidden),
            nn.ELU(),
            nn.Dropout(self.dropout),
        )
        self.head = nn.Linear(self.hidden, self.n_templates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.to(self.head.weight.dtype)))

    def config(self) -> dict[str, Any]:
        return {
            "n_templates": self.n_templates,
            "fp_dim": self.fp_dim,
            "hidden": self.hidden,
            "dropout": self.dropout,
        }

    def set_dropout(self, p: float) -> None:
        """Change the dropout rate (fine-tuning uses 0.4)."""
        self.dropout = float(p)
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = self.dropout


class ForwardTemplateMLP(TemplateMLP):
    """Same architecture; input is the fingerprint of the reactant set (forward direction)."""

    kind = "forward"


@torch.no_grad()
def predict_probabilities(
    net: TemplateMLP,
    fps: np.ndarray | torch.Tensor,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Softmax template probabilities ``(n, n_templates)`` (float32), in eval mode, batched.

    The network's train/eval mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        out = np.empty((len(fps), net.n_templates), dtype=np.float32)
        for s in range(0, len(fps), batch_size):
            xb = torch.as_tensor(np.asarray(fps[s : s + batch_size])).to(device)
            out[s : s + len(xb)] = torch.softmax(net(xb), dim=1).float().cpu().numpy()
    finally:
        net.train(was_training)
    return out


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def _checkpoint(kind: str, net: TemplateMLP, templates: Sequence[str], radius: int,
                extra: dict | None) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "config": {**net.config(), "radius": int(radius)},
        "templates": list(templates),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "extra": dict(extra or {}),
    }


def _read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no template-model checkpoint at '{path}': pass a file saved by .save()")
    try:
        ckpt = safe_torch_load(path)
    except Exception as err:
        raise InputError(
            f"cannot load '{path}' as a template-model checkpoint (weights_only): {err}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"'{path}' is not a template-model checkpoint (expected format {CHECKPOINT_FORMAT})"
        )
    return ckpt


def _net_from_checkpoint(ckpt: dict[str, Any]) -> TemplateMLP:
    cfg = ckpt["config"]
    cls = ForwardTemplateMLP if ckpt.get("kind") == "forward" else TemplateMLP
    net = cls(int(cfg["n_templates"]), int(cfg["fp_dim"]), int(cfg["hidden"]),
              float(cfg["dropout"]))
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    return net


def load_template_model(
    path: str | os.PathLike, device: str = "cpu", **kwargs: Any
) -> MLPSingleStepModel | ForwardTemplateModel:
    """Load a saved backward (:class:`MLPSingleStepModel`) or forward model, by its kind."""
    ckpt = _read_checkpoint(path)
    cls = ForwardTemplateModel if ckpt.get("kind") == "forward" else MLPSingleStepModel
    return cls._from_checkpoint(ckpt, device=device, **kwargs)


def load_trained_model(run_path: str | os.PathLike, device: str = "cpu"
                       ) -> MLPSingleStepModel | ForwardTemplateModel:
    """The selected model of a finished training run (``<run>/model.pt``)."""
    path = Path(run_path) / "model.pt"
    if not path.is_file():
        raise InputError(f"'{run_path}' has no model.pt: is it a finished single-step run?")
    return load_template_model(path, device=device)


# ----------------------------------------------------------------------------------------------
# Backward model
# ----------------------------------------------------------------------------------------------


class _SavedTemplateNet:
    """save/load shared by the backward and forward models (``net``, ``templates``, ``radius``)."""

    kind = "backward"
    net: TemplateMLP
    templates: list[str]
    radius: int

    def _attach_net(self, net: TemplateMLP, radius: int, batch_size: int,
                    device: str | torch.device) -> None:
        """Take ``net`` (checked against ``self.templates``), in eval mode on ``device``."""
        if net.n_templates != len(self.templates):
            raise InputError(
                f"the network scores {net.n_templates} templates but {len(self.templates)} "
                "templates were given: pass the template list the network was trained on"
            )
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.net.eval()
        self.radius = int(radius)
        self.batch_size = int(batch_size)
        self.extra: dict[str, Any] = {}

    def checkpoint(self, extra: dict | None = None) -> dict[str, Any]:
        """The weights_only-safe dict that :meth:`save` writes."""
        return _checkpoint(self.kind, self.net, self.templates, self.radius, extra)

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write config, template list and state_dict atomically to ``path``."""
        return atomic_torch_save(self.checkpoint(extra), path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", **kwargs: Any):
        """Load a model written by :meth:`save` (``weights_only=True``)."""
        ckpt = _read_checkpoint(path)
        if ckpt.get("kind", "backward") != cls.kind:
            raise InputError(
                f"'{path}' holds a {ckpt.get('kind')} model, not a {cls.kind} one; load it "
                "with load_template_model()"
            )
        return cls._from_checkpoint(ckpt, device=device, **kwargs)

    @classmethod
    def _from_checkpoint(cls, ckpt: dict[str, Any], device: str = "cpu", **kwargs: Any):
        net = _net_from_checkpoint(ckpt)
        model = cls(net, list(ckpt["templates"]),  # type: ignore[call-arg]
                    radius=int(ckpt["config"].get("radius", 2)), device=device, **kwargs)
        model.extra = dict(ckpt.get("extra", {}))
        return model


class MLPSingleStepModel(_SavedTemplateNet, TemplateModel):
    """Retro*'s single-step model: a trained :class:`TemplateMLP` over a template list.

    ``propose(products, top_k)`` (from the base classes) scores every template, applies the
    ``top_k`` most probable with rdchiral, merges identical reactant sets (summing) and
    renormalises. ``batch_size`` bounds the products per network forward pass.
    """

    def __init__(
        self,
        net: TemplateMLP,
        templates: Sequence[str],
        *,
        radius: int = 2,
        batch_size: int = 1024,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> None:
        super().__init__(templates, **kwargs)
        self._attach_net(net, radius, batch_size, device)

    def fingerprints(self, smiles: Sequence[str]) -> np.ndarray:
        """Input fingerprints ``(n, fp_dim)`` uint8 of products."""
        return morgan_fingerprints(list(smiles), self.radius, self.net.fp_dim)

    def template_scores(self, products: Sequence[str]) -> np.ndarray:
        """Template probabilities ``(len(products), n_templates)`` (float32)."""
        return predict_probabilities(
            self.net, self.fingerprints(products), self.batch_size, self.device
        )

    def _template_scores(self, products: list[str]) -> np.ndarray:
        return self.template_scores(products)


# ----------------------------------------------------------------------------------------------
# Forward model
# ----------------------------------------------------------------------------------------------


def reverse_template(retro_template: str) -> str:
    """``'product>>reactants'`` -> ``'(reactants)>>product'``: one reactant template.

    The parentheses (component-level grouping) make the whole reactant side one template, so the
    reactant set is passed to RDKit as one molecule and the order of the reactants is irrelevant.
    """
    if not isinstance(retro_template, str) or retro_template.count(">>") != 1:
        raise InputError(
            f"malformed retro template {retro_template!r}: expected 'product>>reactants'"
        )
    product, reactants = (s.strip() for s in retro_template.split(">>"))
    if not product or not reactants:
        raise InputError(f"malformed retro template {retro_template!r}: a side is empty")
    return f"({reactants})>>{product}"


_FORWARD_CACHE: OrderedDict[str, Any] = OrderedDict()
_FORWARD_CACHE_SIZE = 20_000


def _forward_reaction(retro_template: str):
    rxn = _FORWARD_CACHE.get(retro_template)
    if rxn is not None:
        _FORWARD_CACHE.move_to_end(retro_template)
        return rxn
    smarts = reverse_template(retro_template)
    try:
        with rdBase.BlockLogs():
            rxn = rdChemReactions.ReactionFromSmarts(smarts)
            rxn.Initialize()
    except Exception as err:
        raise InputError(f"RDKit cannot compile forward template {smarts!r}: {err}") from None
    if rxn.GetNumReactantTemplates() != 1 or rxn.GetNumProductTemplates() != 1:
        raise InputError(f"forward template {smarts!r} must have one reactant and one product "
                         "template")
    _FORWARD_CACHE[retro_template] = rxn
    if len(_FORWARD_CACHE) > _FORWARD_CACHE_SIZE:
        _FORWARD_CACHE.popitem(last=False)
    return rxn


def apply_forward_template(
    retro_template: str, reactants: str | Sequence[str], max_products: int = 100
) -> list[str]:
    """Products of ``reactants`` under the forward direction of an rdchiral retro template.

    Returns distinct canonical product SMILES (single fragment) in RDKit's order; ``[]`` when the
    template does not match. Outcomes RDKit cannot sanitise are dropped.
    """
    rxn = _forward_reaction(retro_template)
    reactant_set = ".".join(canonical_reactants(reactants))
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(reactant_set)
        if mol is None:
            raise InputError(f"RDKit cannot parse reactants {reactant_set!r}")
        try:
            outcomes = rxn.RunReactants((mol,), max_products)
        except Exception as err:
            raise InputError(
                f"RDKit failed to run {reverse_template(retro_template)!r} on {reactant_set!r}: "
                f"{err}"
            ) from None
        out: list[str] = []
        seen: set[str] = set()
        for outcome in outcomes:
            prod = outcome[0]
            try:
                for atom in prod.GetAtoms():
                    atom.SetAtomMapNum(0)
                Chem.SanitizeMol(prod)
                smi = Chem.MolToSmiles(prod)
                canon = Chem.MolFromSmiles(smi)
            except Exception:
                continue
            if canon is None:
                continue
            smi = Chem.MolToSmiles(canon)
            if "." in smi or smi in seen:
                continue
            seen.add(smi)
            out.append(smi)
    return out


@dataclass(frozen=True)
class ForwardPrediction:
    """A predicted product, its probability (template probabilities summed) and best template."""

    product: str
    probability: float
    template_id: int


class ForwardTemplateModel(_SavedTemplateNet):
    """Forward model: :class:`ForwardTemplateMLP` over retro templates applied forwards.

    ``predict(reactant_sets)`` scores every template from the reactant-set fingerprint, applies
    the ``n_templates`` most probable forwards and gives each resulting product the sum of the
    probabilities of the templates that produce it (not renormalised unless asked, so a
    threshold such as p >= 0.8 keeps its meaning).
    """

    kind = "forward"

    def __init__(
        self,
        net: TemplateMLP,
        templates: Sequence[str],
        *,
        radius: int = 2,
        batch_size: int = 1024,
        device: str | torch.device = "cpu",
    ) -> None:
        self.templates = list(templates)
        self.n_template_errors = 0
        self._attach_net(net, radius, batch_size, device)

    def fingerprints(self, reactant_sets: Sequence[str | Sequence[str]]) -> np.ndarray:
        """Input fingerprints ``(n, fp_dim)`` uint8 of reactant sets."""
        joined = [r if isinstance(r, str) else ".".join(r) for r in reactant_sets]
        return morgan_fingerprints(joined, self.radius, self.net.fp_dim)

    def template_scores(self, reactant_sets: Sequence[str | Sequence[str]]) -> np.ndarray:
        return predict_probabilities(
            self.net, self.fingerprints(reactant_sets), self.batch_size, self.device
        )

    def predict(
        self,
        reactant_sets: Sequence[str | Sequence[str]],
        n_templates: int = 10,
        top_k: int = 10,
        renormalize: bool = False,
    ) -> list[list[ForwardPrediction]]:
        """At most ``top_k`` products per reactant set, most probable first."""
        if isinstance(reactant_sets, str):
            raise InputError("predict() takes a list of reactant sets")
        scores = self.template_scores(reactant_sets)
        out: list[list[ForwardPrediction]] = []
        k = min(n_templates, len(self.templates))
        for reactants, row in zip(reactant_sets, scores):
            merged: dict[str, list] = {}
            for t in np.argsort(-row, kind="stable")[:k]:
                p = float(row[t])
                try:
                    products = apply_forward_template(self.templates[t], reactants)
                except InputError:
                    self.n_template_errors += 1
                    continue
                for prod in products:
                    entry = merged.setdefault(prod, [0.0, int(t)])
                    entry[0] += p
            items = sorted(merged.items(), key=lambda kv: -kv[1][0])[:top_k]
            total = sum(v[0] for _, v in items)
            out.append([
                ForwardPrediction(prod, (p / total) if renormalize and total > 0 else p, t)
                for prod, (p, t) in items
            ])
        return out
