"""A dataset's description: :class:`DatasetSpec` (its files and the ordered sources that give
them). The entries are in :mod:`selfsup.data.catalog`; fetching is :mod:`selfsup.data.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selfsup.data.sources import Source

KINDS = ("image", "molecules", "reactions", "model")  # model: pretrained weights (a prior)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its files in the canonical layout and the ordered sources that give them.

    ``files`` are paths relative to the dataset directory. ``citation`` is one line with the
    reference and the licence. ``sources`` are tried in order by :func:`fetch`.
    """

    name: str
    kind: str
    description: str
    citation: str
    files: tuple[str, ...]
    sources: tuple[Source, ...] = field(default=(), repr=False)
    fetchable: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
