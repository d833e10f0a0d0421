"""Synthesis routes: a tree molecule -> reaction -> molecules, with JSON round trip and a picture.

A :class:`Route` is a molecule with an optional :class:`RouteStep` (the reaction that makes it
from its reactants, each again a :class:`Route`). Leaves are building blocks (``in_stock``).
Cost follows Retro* (Chen et al., ICML 2020): a reaction costs ``-log(clip(p, 1e-3, 1))`` and a
route costs the sum over its reactions.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsup.errors import InputError

__all__ = ["Route", "RouteStep", "draw_route", "reaction_cost"]

MIN_PROBABILITY = 1e-3


def reaction_cost(probability: float, min_probability: float = MIN_PROBABILITY) -> float:
    """Retro* reaction cost ``-log(clip(p, min_probability, 1))``."""
    p = min(max(float(probability), min_probability), 1.0)
    return -math.log(p)


@dataclass
class RouteStep:
    """The reaction that makes a route's molecule: reactants (sub-routes), probability, cost."""

    reactants: list[Route]
    probability: float
    cost: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Route:
    """A molecule and (unless it is a leaf) the step that makes it."""

    smiles: str
    in_stock: bool = False
    step: RouteStep | None = None

    # -- measures -----------------------------------------------------------------------
    @property
    def total_cost(self) -> float:
        """Sum of reaction costs over the whole tree."""
        if self.step is None:
            return 0.0
        return self.step.cost + sum(r.total_cost for r in self.step.reactants)

    @property
    def length(self) -> int:
        """Number of reactions in the route."""
        if self.step is None:
            return 0
        return 1 + sum(r.length for r in self.step.reactants)

    @property
    def depth(self) -> int:
        """Longest chain of reactions from the target to a leaf."""
        if self.step is None:
            return 0
        return 1 + max((r.depth for r in self.step.reactants), default=0)

    @property
    def is_solved(self) -> bool:
        """Every leaf is a building block."""
        if self.step is None:
            return self.in_stock
        return all(r.is_solved for r in self.step.reactants)

    def reactions(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """``(product, reactants)`` for each reaction, target first (pre-order)."""
        if self.step is None:
            return
        yield self.smiles, tuple(r.smiles for r in self.step.reactants)
        for r in self.step.reactants:
            yield from r.reactions()

    def leaves(self) -> list[str]:
        """SMILES of the starting materials (leaves), left to right."""
        if self.step is None:
            return [self.smiles]
        return [leaf for r in self.step.reactants for leaf in r.leaves()]

    def signature(self) -> tuple:
        """Hashable, order-free description of the tree (to compare or de-duplicate routes)."""
        if self.step is None:
            return (self.smiles,)
        return (self.smiles, tuple(sorted(r.signature() for r in self.step.reactants)))

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"smiles": self.smiles, "in_stock": self.in_stock}
        if self.step is not None:
            d["reaction"] = {
                "probability": self.step.probability,
                "cost": self.step.cost,
                "metadata": dict(self.step.metadata),
                "reactants": [r.to_dict() for r in self.step.reactants],
            }
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Route:
        if not isinstance(d, dict) or not isinstance(d.get("smiles"), str):
            raise InputError(f"route node must be a dict with a 'smiles' string, got {d!r:.200}")
        step = None
        rxn = d.get("reaction")
        if rxn is not None:
            if not isinstance(rxn, dict) or not isinstance(rxn.get("reactants"), list):
                raise InputError(
                    f"route reaction of {d['smiles']!r} must be a dict with a 'reactants' list"
                )
            try:
                prob = float(rxn.get("probability", 1.0))
                cost = float(rxn["cost"]) if "cost" in rxn else reaction_cost(prob)
            except (TypeError, ValueError) as err:
                raise InputError(
                    f"bad probability/cost in route of {d['smiles']!r}: {err}"
                ) from None
            step = RouteStep(
                reactants=[cls.from_dict(r) for r in rxn["reactants"]],
                probability=prob,
                cost=cost,
                metadata=dict(rxn.get("metadata") or {}),
            )
        return cls(smiles=d["smiles"], in_stock=bool(d.get("in_stock", False)), step=step)


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------


def _mol_image(smiles: str, size: int):
    from PIL import Image, ImageDraw

    try:
        from rdkit import Chem, rdBase
        from rdkit.Chem import Draw

        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise ValueError(smiles)
        return Draw.MolToImage(mol, size=(size, size)).convert("RGB")
    except Exception:  # unparsable SMILES or no drawing backend: a labelled box instead
        img = Image.new("RGB", (size, size), "white")
        ImageDraw.Draw(img).text((4, size // 2), smiles[:40], fill="black")
        return img


def draw_route(route: Route, path: str | os.PathLike, *, mol_size: int = 180) -> Path:
    """Write a PNG of ``route``: molecules as RDKit depictions, target on top, reactants below.

    Building blocks get a green frame, other leaves a red one; each reaction is labelled with
    its probability. Returns the path written (atomically).
    """
    from PIL import Image, ImageDraw

    from selfsup.io import atomic_write_bytes

    # Layout: leaves take consecutive columns; a product sits above the mean of its reactants.
    positions: dict[int, tuple[float, int]] = {}
    nodes: list[Route] = []
    next_col = [0]

    def layout(node: Route, level: int) -> float:
        nodes.append(node)
        if node.step is None or not node.step.reactants:
            x = float(next_col[0])
            next_col[0] += 1
        else:
            xs = [layout(r, level + 1) for r in node.step.reactants]
            x = sum(xs) / len(xs)
        positions[id(node)] = (x, level)
        return x

    layout(route, 0)
    n_cols = max(next_col[0], 1)
    n_rows = route.depth + 1
    gap_x, gap_y, margin = 30, 70, 20
    cell_w, cell_h = mol_size + gap_x, mol_size + gap_y
    width = margin * 2 + n_cols * cell_w
    height = margin * 2 + n_rows * cell_h
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)

    def corner(node: Route) -> tuple[int, int]:
        x, level = positions[id(node)]
        return int(margin + x * cell_w), int(margin + level * cell_h)

    for node in nodes:  # edges first, so images sit on top
        if node.step is None:
            continue
        px, py = corner(node)
        top = (px + mol_size // 2, py + mol_size)
        mid_y = py + mol_size + gap_y // 2
        for r in node.step.reactants:
            cx, cy = corner(r)
            draw.line(
                [top, (top[0], mid_y), (cx + mol_size // 2, mid_y), (cx + mol_size // 2, cy)],
                fill="grey",
                width=2,
            )
        draw.text((top[0] + 4, py + mol_size + 4), f"p={node.step.probability:.3g}", fill="blue")
    for node in nodes:
        x, y = corner(node)
        canvas.paste(_mol_image(node.smiles, mol_size), (x, y))
        if node.step is None:
            colour = "green" if node.in_stock else "red"
            draw.rectangle([x, y, x + mol_size - 1, y + mol_size - 1], outline=colour, width=3)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
