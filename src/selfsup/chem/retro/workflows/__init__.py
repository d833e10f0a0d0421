"""selfsup.chem.retro.workflows: the retrosynthesis applications.

Planning many targets (``plan``: ``selfsup chem plan``), self-improvement
(``self_improve``: ``selfsup chem self-improve``), the chained USPTO-50k route benchmark
(``route_benchmark``) and its ORD-extended variant (``route_benchmark_ord``), and ORD records
made into reactions (``ord_reactions``).

Imports: everything below it (:mod:`selfsup.chem.retro.core`, ``models``, ``training``) and
this sub-package. This ``__init__`` imports nothing.
"""
