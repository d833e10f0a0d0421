"""selfsup.chem.retro: reactions, templates, stock, single-step model bases, Retro* search.

Nothing here imports torch; the neural single-step and value models live in their own files.
"""

from .reactions import (
    BulkReport,
    Reaction,
    apply_retro_template,
    apply_templates,
    canonical_smiles,
    extract_retro_template,
    extract_templates,
    parse_reactions,
)
from .routes import Route, RouteStep, draw_route, reaction_cost
from .search import MoleculeNode, ReactionNode, RetroStar, SearchResult
from .single_step import FixedReactionModel, Proposal, SingleStepModel, TemplateModel
from .stock import Stock, stock_from_reactions

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
    "canonical_smiles",
    "draw_route",
    "extract_retro_template",
    "extract_templates",
    "parse_reactions",
    "reaction_cost",
    "stock_from_reactions",
]
