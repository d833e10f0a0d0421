"""Graph GA operators: crossover and mutation on molecular graphs (GB-GA, Jensen 2019).

Jensen, "A graph-based genetic algorithm and its application to the multiobjective evolution of
median molecules", Chem. Sci. 10, 3567 (2019). GEGL (Ahn et al., NeurIPS 2020) uses these
operators as its "genetic expert"; GuacaMol's and PMO's "Graph GA" baseline runs the same loop
(:mod:`selfsup.chem.optimize.graph_ga`). Reproduction of a population with them over a process
pool is in :mod:`.reproduce`.

Operators work on Kekulé graphs (aromatic flags cleared) with direct ``RWMol`` edits, then the child
is sanitised, re-parsed from its SMILES and checked:

* one connected component (no more than the parent had);
* no ring larger than ``max(6, largest ring of the parents)``, no atom with two double bonds in a
  ring, no double bond in a 3- or 4-ring (GB-GA's ring sanity rules), and (our addition) no
  triple bond in a ring;
* at most ``max_heavy_atoms`` heavy atoms when that is given. The reference code drew a hard cap
  (~39 heavy atoms) from a normal distribution; here there is no cap unless asked for.

Children are canonical RDKit SMILES without stereochemistry (parents are read without it).

Time guard: one child may not stall a run. Each operator call (one child slot of ``reproduce``:
its crossover tries, then its mutation) checks the time between its Python-level steps and gives
up after ``time_limit_s`` (:data:`OPERATOR_TIME_LIMIT_S`, 1 s; None: no guard): the slot makes no
child (a mutation that gives up keeps the child unmutated), and the give-up is counted
(``n_timeouts``; the public ``crossover``/``mutate`` count into :data:`GIVE_UPS`). Drug-sized
parents take milliseconds, so the guard never fires for them and results stay a function of the
seed; it is what stops e.g. a 5,000-carbon chain (add-ring used to build its full distance matrix:
minutes). Nothing checks a single RDKit call, so parents of many thousands of atoms are still slow
to parse and write; keep molecules small with ``max_heavy_atoms`` or the oracle's limits.

Differences from the reference code, on purpose: a mutation that fails never loses the child (other
kinds are tried, then the child is kept unmutated and the failure is counted); every random choice
goes through an explicit ``numpy.random.Generator``.
"""

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

import numpy as np
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from selfsup.errors import InputError

__all__ = [
    "GIVE_UPS",
    "MUTATION_KINDS",
    "OPERATOR_TIME_LIMIT_S",
    "Mutation",
    "crossover",
    "mutate",
]

_BOND = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
_ORDER = {v: k for k, v in _BOND.items()}

# Jensen 2019 (GB-GA), mutation step, as we read the paper and its supplementary code description:
# - the seven kinds and their probabilities (insert atom and append atom 0.15, the others 0.14);
# - change atom: the new element is drawn from C, N, O, F, S, Cl, Br with 0.15, 0.15, 0.14, 0.14,
#   0.14, 0.14, 0.14;
# - append atom: bond order single/double/triple with 0.60/0.35/0.05, then uniformly an element
#   that supports it (single: C N O F S Cl Br; double: C N O; triple: C N);
# - insert atom: C, N or O into a single bond, C or N next to a double bond, C next to a triple;
# - add ring: close a 3- to 6-membered ring between two non-ring atoms that carry hydrogens;
# - delete atom: the degree (1 to 4) of the removed atom is chosen uniformly, its neighbours are
#   reconnected in a chain by single bonds.
MUTATION_KINDS = (
    "insert_atom",
    "change_bond_order",
    "delete_cyclic_bond",
    "add_ring",
    "delete_atom",
    "change_atom",
    "append_atom",
)
_KIND_P = np.array([0.15, 0.14, 0.14, 0.14, 0.14, 0.14, 0.15])
_CHANGE_ELEMENTS = ("C", "N", "O", "F", "S", "Cl", "Br")
_CHANGE_P = np.array([0.15, 0.15, 0.14, 0.14, 0.14, 0.14, 0.14])
_APPEND_ORDER_P = np.array([0.60, 0.35, 0.05])
_APPEND_ELEMENTS = {1: ("C", "N", "O", "F", "S", "Cl", "Br"), 2: ("C", "N", "O"), 3: ("C", "N")}
_INSERT_ELEMENTS = {1: ("C", "N", "O"), 2: ("C", "N"), 3: ("C",)}
_SITE_TRIES = 3  # random sites tried per mutation kind before moving to the next kind
_DENSE_DISTANCE_MAX_ATOMS = 200  # add-ring: full distance matrix up to here, bounded BFS above

#: Seconds one operator call (a child slot's crossover tries, or one mutation) may take before it
#: gives up on that child (see the module docstring). Drug-sized molecules take milliseconds;
#: a 5,000-carbon chain about 1 to 2 s here.
OPERATOR_TIME_LIMIT_S = 1.0

#: Give-ups of the public :func:`crossover` and :func:`mutate` in this process, by operator
#: (:func:`~.reproduce.reproduce` and the GA loop report theirs in ``n_timeouts``).
GIVE_UPS: Counter = Counter()


# --------------------------------------------------------------------------- time guard
class _GaveUp(Exception):
    """The current operator call ran past its time limit."""


_DEADLINE: ContextVar[float | None] = ContextVar("selfsup_genetic_deadline", default=None)


def _check_time() -> None:
    deadline = _DEADLINE.get()
    if deadline is not None and time.perf_counter() > deadline:
        raise _GaveUp


@contextmanager
def _time_guard(limit_s: float | None) -> Iterator[None]:
    """Operators called inside raise :class:`_GaveUp` at their next check after ``limit_s``."""
    if limit_s is not None and not limit_s > 0:
        raise InputError(f"time_limit_s must be positive or None, got {limit_s!r}")
    token = _DEADLINE.set(None if limit_s is None else time.perf_counter() + limit_s)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


# --------------------------------------------------------------------------- parsed parents
class _Graph:
    """A Kekulé parent with its adjacency, bonds, cut points and largest ring, computed once.

    Atoms and bonds are read by index (``GetAtomWithIdx``, ``GetBondWithIdx``): the same objects
    in the same order as RDKit's ``GetAtoms()``/``GetBonds()``, without their Python-level
    iterators, which cost more than the reads themselves.
    """

    def __init__(self, mol: Chem.Mol) -> None:
        self.mol = mol
        self.n = mol.GetNumAtoms()
        atoms = [mol.GetAtomWithIdx(i) for i in range(self.n)]
        self.adj = [[nb.GetIdx() for nb in a.GetNeighbors()] for a in atoms]
        self.hs = [a.GetTotalNumHs() for a in atoms]
        self.n_frags = len(Chem.GetMolFrags(mol))
        rings = mol.GetRingInfo().AtomRings()
        self.max_ring = max((len(r) for r in rings), default=0)
        bonds = [mol.GetBondWithIdx(k) for k in range(mol.GetNumBonds())]
        # (begin, end, bond type) of every bond, in bond order
        self.bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.GetBondType()) for b in bonds]
        self.chain_cuts = [
            (i, j)
            for (i, j, bt), b in zip(self.bonds, bonds)
            if bt == Chem.BondType.SINGLE and not b.IsInRing()
        ]
        self._ring_cuts: list[tuple] | None = None

    def ring_cuts(self) -> list[tuple]:
        """Pairs of bonds of one ring, adjacent or one bond apart, whose removal splits the graph.

        Each entry: (inner atoms, inner ends, outer ends, orders of the two cut bonds); the ends are
        ordered like the cut bonds.
        """
        if self._ring_cuts is None:
            cuts = []
            for ring in self.mol.GetRingInfo().AtomRings():
                _check_time()
                k = len(ring)
                for i in range(k):
                    for gap in (0, 1):  # 0: the cut bonds share an atom; 1: one bond between them
                        if gap == 1 and k < 4:
                            continue
                        r = [ring[(i + s) % k] for s in range(4)]
                        c1, c2 = (r[0], r[1]), (r[1 + gap], r[2 + gap])
                        inner = _component(self.adj, r[1], {_key(*c1), _key(*c2)})
                        if r[0] in inner or r[2 + gap] in inner:
                            continue  # a fused ring keeps the two sides connected
                        orders = tuple(
                            _ORDER.get(self.mol.GetBondBetweenAtoms(*c).GetBondType(), 1)
                            for c in (c1, c2)
                        )
                        cuts.append((inner, (r[1], r[1 + gap]), (r[0], r[2 + gap]), orders))
            self._ring_cuts = cuts
        return self._ring_cuts


def _key(i: int, j: int) -> tuple[int, int]:
    return (i, j) if i < j else (j, i)


def _component(adj: list[list[int]], start: int, cut: set[tuple[int, int]]) -> frozenset[int]:
    seen, stack = {start}, [start]
    while stack:
        a = stack.pop()
        for b in adj[a]:
            if b not in seen and _key(a, b) not in cut:
                seen.add(b)
                stack.append(b)
    return frozenset(seen)


def _prepare(mol: Chem.Mol | None) -> _Graph | None:
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    mol = Chem.Mol(mol)
    Chem.RemoveStereochemistry(mol)
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:  # noqa: BLE001 - RDKit raises its own KekulizeException
        return None
    return _Graph(mol)


def _parse(smiles: str) -> _Graph | None:
    return _prepare(Chem.MolFromSmiles(smiles))


# --------------------------------------------------------------------------- checks
def _finish(
    rw: Chem.RWMol, touched: Sequence[int], max_ring: int, max_frags: int, max_heavy: int | None
) -> tuple[str, Chem.Mol] | None:
    """Let touched atoms recompute their hydrogens, sanitise, check; (canonical SMILES, mol)."""
    _check_time()
    for idx in touched:
        atom = rw.GetAtomWithIdx(idx)
        atom.SetNoImplicit(False)
        atom.SetNumExplicitHs(0)
        atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    mol = rw.GetMol()
    if Chem.SanitizeMol(mol, catchErrors=True) != Chem.SanitizeFlags.SANITIZE_NONE:
        return None
    if max_heavy is not None and mol.GetNumHeavyAtoms() > max_heavy:
        return None
    if len(Chem.GetMolFrags(mol)) > max_frags or not _rings_ok(mol, max_ring):
        return None
    _check_time()
    mol = Chem.MolFromSmiles(Chem.MolToSmiles(mol))
    if mol is None:
        return None
    _check_time()  # writing a SMILES is the slowest step for big molecules (superlinear)
    return Chem.MolToSmiles(mol), mol


def _rings_ok(mol: Chem.Mol, max_ring: int) -> bool:
    rings = mol.GetRingInfo()
    if any(len(r) > max_ring for r in rings.AtomRings()):
        return False
    double_to_ring: dict[int, int] = {}  # ring atom -> its double bonds to ring atoms
    for k in range(mol.GetNumBonds()):
        bond = mol.GetBondWithIdx(k)
        bt = bond.GetBondType()
        if bt == Chem.BondType.TRIPLE and bond.IsInRing():
            return False  # our addition: no cyclic alkynes / arynes
        if bt == Chem.BondType.DOUBLE:
            if bond.IsInRingSize(3) or bond.IsInRingSize(4):
                return False
            a, b = bond.GetBeginAtom(), bond.GetEndAtom()
            if a.IsInRing() and b.IsInRing():
                for i in (a.GetIdx(), b.GetIdx()):
                    double_to_ring[i] = double_to_ring.get(i, 0) + 1
                    if double_to_ring[i] >= 2:  # an allene inside ring atoms
                        return False
    return True


# --------------------------------------------------------------------------- crossover
def _assemble(parts, joins) -> tuple[Chem.RWMol, list[int]] | None:
    """Copy the kept atoms of each (graph, keep) part into one graph, then add the join bonds.

    ``joins``: ((part, atom), (part, atom), bond order). Returns the graph and its touched atoms.
    """
    rw = Chem.RWMol()
    maps = []
    for graph, keep in parts:
        _check_time()
        mol = graph.mol
        index = {a: rw.AddAtom(mol.GetAtomWithIdx(a)) for a in sorted(keep)}  # adds a copy
        for i, j, bt in graph.bonds:
            if i in index and j in index:
                rw.AddBond(index[i], index[j], bt)
        maps.append(index)
    touched = []
    for (p, a), (q, b), order in joins:
        i, j = maps[p][a], maps[q][b]
        if i == j or rw.GetBondBetweenAtoms(i, j) is not None:
            return None
        rw.AddBond(i, j, _BOND[order])
        touched += [i, j]
    return rw, touched


def _chain_crossover(ga: _Graph, gb: _Graph, rng: np.random.Generator, max_heavy):
    """Cut each parent at a random acyclic single bond; join a fragment of each by a single bond."""
    parts, ends = [], []
    for g in (ga, gb):
        i, j = g.chain_cuts[rng.integers(len(g.chain_cuts))]
        end = i if rng.random() < 0.5 else j
        parts.append((g, _component(g.adj, end, {_key(i, j)})))
        ends.append(end)
    built = _assemble(parts, [((0, ends[0]), (1, ends[1]), 1)])
    if built is None:
        return None
    max_ring = max(6, ga.max_ring, gb.max_ring)
    return _finish(*built, max_ring, max(ga.n_frags, gb.n_frags), max_heavy)


def _ring_crossover(ga: _Graph, gb: _Graph, rng: np.random.Generator, max_heavy):
    """Cut one ring of each parent at two bonds; close a new ring from one fragment of each.

    The two new bonds take the smaller order of the cut bonds they replace (so Kekulé aromatic
    halves can close an aromatic ring); if that fails to sanitise, single bonds are tried.
    """
    parts, ends, orders = [], [], []
    for g in (ga, gb):
        cuts = g.ring_cuts()
        inner, inner_ends, outer_ends, cut_orders = cuts[rng.integers(len(cuts))]
        if rng.random() < 0.5:
            parts.append((g, inner))
            ends.append(inner_ends)
        else:
            parts.append((g, frozenset(range(g.n)) - inner))
            ends.append(outer_ends)
        orders.append(cut_orders)
    swap = int(rng.random() < 0.5)
    max_ring = max(6, ga.max_ring, gb.max_ring)
    for single in (False, True):
        joins = []
        for k in (0, 1):
            kb = k ^ swap
            order = 1 if single else min(orders[0][k], orders[1][kb])
            joins.append(((0, ends[0][k]), (1, ends[1][kb]), order))
        built = _assemble(parts, joins)
        if built is None:
            return None
        child = _finish(*built, max_ring, max(ga.n_frags, gb.n_frags), max_heavy)
        if child is not None:
            return child
    return None


def _crossover(ga: _Graph, gb: _Graph, rng, max_heavy, tries: int, kind: str | None):
    kinds = [
        k
        for k, ok in (
            ("ring", bool(ga.ring_cuts()) and bool(gb.ring_cuts())),
            ("chain", bool(ga.chain_cuts) and bool(gb.chain_cuts)),
        )
        if ok and kind in (None, k)
    ]
    if not kinds:
        return None
    for _ in range(tries):
        _check_time()
        # Jensen 2019: ring or non-ring crossover with probability 0.5 each, when both are possible
        k = kinds[0] if len(kinds) == 1 else kinds[int(rng.random() < 0.5)]
        op = _ring_crossover if k == "ring" else _chain_crossover
        child = op(ga, gb, rng, max_heavy)
        if child is not None:
            return child
    return None


def crossover(
    parent_a: str,
    parent_b: str,
    rng: np.random.Generator,
    *,
    max_heavy_atoms: int | None = None,
    tries: int = 10,
    kind: str | None = None,
    time_limit_s: float | None = OPERATOR_TIME_LIMIT_S,
) -> str | None:
    """One child of two parents by GB-GA crossover (Jensen 2019), or None after ``tries`` failures.

    ``kind`` restricts the operator to "ring" or "chain" (non-ring); by default each try picks one
    of those both parents support with probability 0.5. ``max_heavy_atoms``: optional size cap
    (default: none). After ``time_limit_s`` seconds the call gives up (None; counted in
    ``GIVE_UPS["crossover"]``). Raises InputError on an unparsable parent.
    """
    if kind not in (None, "ring", "chain"):
        raise InputError(f"crossover kind must be 'ring', 'chain' or None, got {kind!r}")
    ga, gb = _parse_or_raise(parent_a), _parse_or_raise(parent_b)
    try:
        with BlockLogs(), _time_guard(time_limit_s):
            child = _crossover(ga, gb, rng, max_heavy_atoms, tries, kind)
    except _GaveUp:
        GIVE_UPS["crossover"] += 1
        return None
    return None if child is None else child[0]


# --------------------------------------------------------------------------- mutation
def _pick(rng: np.random.Generator, items: Sequence):
    return items[rng.integers(len(items))] if len(items) else None


def _insert_atom(g: _Graph, rw: Chem.RWMol, rng):
    bond = _pick(rng, list(g.mol.GetBonds()))
    if bond is None or bond.GetBondType() not in _ORDER:
        return None
    i, j, bt = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), bond.GetBondType()
    z = rw.AddAtom(Chem.Atom(_pick(rng, _INSERT_ELEMENTS[_ORDER[bt]])))
    rw.RemoveBond(i, j)
    rw.AddBond(i, z, bt)
    rw.AddBond(z, j, Chem.BondType.SINGLE)
    return [i, j, z]


def _change_bond_order(g: _Graph, rw: Chem.RWMol, rng):
    bond = _pick(rng, list(g.mol.GetBonds()))
    if bond is None or bond.GetBondType() not in _ORDER:
        return None
    i, j, old = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), _ORDER[bond.GetBondType()]
    room = min(g.hs[i], g.hs[j])  # raising the order takes one hydrogen from each end
    new = _pick(rng, [o for o in (1, 2, 3) if o != old and o - old <= room])
    if new is None:
        return None
    rw.GetBondBetweenAtoms(i, j).SetBondType(_BOND[new])
    return [i, j]


def _delete_cyclic_bond(g: _Graph, rw: Chem.RWMol, rng):
    bond = _pick(rng, [b for b in g.mol.GetBonds() if b.IsInRing()])
    if bond is None:
        return None
    i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
    rw.RemoveBond(i, j)
    return [i, j]


def _add_ring(g: _Graph, rw: Chem.RWMol, rng):
    free = [a.GetIdx() for a in g.mol.GetAtoms() if not a.IsInRing() and g.hs[a.GetIdx()] > 0]
    if len(free) < 2:
        return None
    pairs = _ring_pairs(g, free)
    for _ in range(_SITE_TRIES):
        pair = _pick(rng, pairs)
        if pair is None:
            return None
        path = Chem.GetShortestPath(g.mol, *pair)
        if not any(g.mol.GetAtomWithIdx(a).IsInRing() for a in path):
            rw.AddBond(*pair, Chem.BondType.SINGLE)
            return list(pair)
    return None


def _ring_pairs(g: _Graph, free: list[int], dense_max: int = _DENSE_DISTANCE_MAX_ATOMS
                ) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of ``free`` atoms (ascending indices), ``i < j``, 2 to 5 bonds apart, in
    ``free`` order. Up to ``dense_max`` atoms from RDKit's distance matrix; above, by a BFS of
    depth 5 from each atom (the same pairs: the full matrix took minutes at 5,000 atoms))."""
    if g.n <= dense_max:
        dist = Chem.GetDistanceMatrix(g.mol)
        return [(i, j) for n, i in enumerate(free) for j in free[n + 1 :] if 2 <= dist[i, j] <= 5]
    is_free = set(free)
    pairs: list[tuple[int, int]] = []
    for i in free:
        _check_time()
        depth, frontier = {i: 0}, [i]
        for d in range(1, 6):
            nxt = []
            for a in frontier:
                for b in g.adj[a]:
                    if b not in depth:
                        depth[b] = d
                        nxt.append(b)
            frontier = nxt
        pairs += [(i, j) for j in sorted(depth) if j > i and depth[j] >= 2 and j in is_free]
    return pairs


def _delete_atom(g: _Graph, rw: Chem.RWMol, rng):
    if g.n < 2:
        return None
    by_degree: dict[int, list[int]] = {}
    for a in range(g.n):
        by_degree.setdefault(len(g.adj[a]), []).append(a)
    degrees = sorted(d for d in by_degree if 1 <= d <= 4)
    if not degrees:
        return None
    a = _pick(rng, by_degree[_pick(rng, degrees)])
    nbs = [int(n) for n in rng.permutation(g.adj[a])]
    rw.RemoveAtom(a)
    nbs = [n - 1 if n > a else n for n in nbs]
    for p, q in zip(nbs, nbs[1:]):
        if rw.GetBondBetweenAtoms(p, q) is None:
            rw.AddBond(p, q, Chem.BondType.SINGLE)
    return nbs


def _change_atom(g: _Graph, rw: Chem.RWMol, rng):
    a = int(rng.integers(g.n))
    atom = rw.GetAtomWithIdx(a)
    allowed = np.array([s != atom.GetSymbol() for s in _CHANGE_ELEMENTS])
    p = _CHANGE_P * allowed
    symbol = _CHANGE_ELEMENTS[rng.choice(len(p), p=p / p.sum())]
    atom.SetAtomicNum(Chem.GetPeriodicTable().GetAtomicNumber(symbol))
    atom.SetFormalCharge(0)
    atom.SetIsotope(0)
    return [a]


def _append_atom(g: _Graph, rw: Chem.RWMol, rng):
    order = int(rng.choice(3, p=_APPEND_ORDER_P)) + 1
    a = _pick(rng, [i for i in range(g.n) if g.hs[i] >= order])
    if a is None:
        return None
    z = rw.AddAtom(Chem.Atom(_pick(rng, _APPEND_ELEMENTS[order])))
    rw.AddBond(a, z, _BOND[order])
    return [a, z]


_MUTATORS: dict[str, Callable] = {
    "insert_atom": _insert_atom,
    "change_bond_order": _change_bond_order,
    "delete_cyclic_bond": _delete_cyclic_bond,
    "add_ring": _add_ring,
    "delete_atom": _delete_atom,
    "change_atom": _change_atom,
    "append_atom": _append_atom,
}


class Mutation(NamedTuple):
    """A mutated molecule; ``kind`` is None when every kind failed (or the call ran past its time
    limit, counted in ``GIVE_UPS["mutate"]``) and ``smiles`` is the canonical input."""

    smiles: str
    kind: str | None


def _mutate(g: _Graph, rng, max_heavy, kinds: Sequence[str]) -> tuple[str, Chem.Mol, str] | None:
    """Try kinds in a random order weighted by the paper's probabilities; None if all fail."""
    p = np.array([_KIND_P[MUTATION_KINDS.index(k)] for k in kinds])
    order = rng.choice(len(kinds), size=len(kinds), replace=False, p=p / p.sum())
    for k in order:
        kind = kinds[k]
        for _ in range(_SITE_TRIES):
            _check_time()
            rw = Chem.RWMol(g.mol)
            touched = _MUTATORS[kind](g, rw, rng)
            if touched is None:
                continue
            child = _finish(rw, touched, max(6, g.max_ring), g.n_frags, max_heavy)
            if child is not None:
                return child[0], child[1], kind
    return None


def mutate(
    smiles: str,
    rng: np.random.Generator,
    *,
    max_heavy_atoms: int | None = None,
    kinds: Sequence[str] = MUTATION_KINDS,
    time_limit_s: float | None = OPERATOR_TIME_LIMIT_S,
) -> Mutation:
    """Mutate one molecule with a GB-GA operator (Jensen 2019); never loses the molecule.

    Kinds are tried in a random order drawn with the paper's probabilities, each at up to three
    random sites; if all fail the canonical input comes back with ``kind=None``. ``kinds`` may
    restrict the operators (names in ``MUTATION_KINDS``). After ``time_limit_s`` seconds the call
    gives up: the canonical input comes back with ``kind=None`` (counted in
    ``GIVE_UPS["mutate"]``). Raises InputError on a bad SMILES.
    """
    unknown = [k for k in kinds if k not in _MUTATORS]
    if unknown or not kinds:
        raise InputError(f"unknown mutation kinds {unknown}; choose from {list(MUTATION_KINDS)}")
    g = _parse_or_raise(smiles)
    try:
        with BlockLogs(), _time_guard(time_limit_s):
            out = _mutate(g, rng, max_heavy_atoms, list(kinds))
    except _GaveUp:
        GIVE_UPS["mutate"] += 1
        out = None
    if out is None:
        return Mutation(Chem.MolToSmiles(Chem.MolFromSmiles(smiles)), None)
    return Mutation(out[0], out[2])


def _parse_or_raise(smiles: str) -> _Graph:
    g = _parse(smiles)
    if g is None:
        raise InputError(f"cannot parse SMILES {smiles!r}; pass a valid, kekulizable molecule")
    return g
