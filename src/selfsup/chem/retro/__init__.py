"""selfsup.chem.retro: retrosynthesis, in four sub-packages, lowest first.

- ``core``: reactions and templates, routes, stock, single-step model bases, Retro* search and
  toy reaction worlds; no torch.
- ``models``: the neural models (template MLP, value network; torch); imports ``core``.
- ``training``: single-step training data and training; imports ``core`` and ``models``.
- ``workflows``: the applications (planning, self-improvement, route benchmarks, ORD
  reactions); imports everything below it.

A module imports its own sub-package and lower ones only. This package re-exports the public
core names below; importing it does not import torch.
"""

from .core.reactions import (
    BulkReport,
    Reaction,
    apply_retro_template,
    apply_templates,
    extract_retro_template,
    extract_templates,
    parse_reactions,
)
from .core.routes import Route, RouteStep, draw_route, reaction_cost
from .core.search import MoleculeNode, ReactionNode, RetroStar, SearchResult
from .core.single_step import FixedReactionModel, Proposal, SingleStepModel, TemplateModel
from .core.stock import Stock, stock_from_reactions

__all__ = [
    "BulkReport",
    "FixedReactionModel",
    "MoleculeNode",
    "Proposal",
    "Reaction",
    "ReactionNode",
    "RetroStar",
    "Route",
    "RouteStep",
    "SearchResult",
    "SingleStepModel",
    "Stock",
    "TemplateModel",
    "apply_retro_template",
    "apply_templates",
    "draw_route",
    "extract_retro_template",
    "extract_templates",
    "parse_reactions",
    "reaction_cost",
    "stock_from_reactions",
]
