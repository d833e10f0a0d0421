"""The package's import graph has no cycle, counting imports inside functions too."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, tuple[Path, list[str]]]:
    """module name -> (file, the package its relative imports start from)."""
    mods = {}
    for path in (SRC / "selfsup").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            package = parts
        else:
            package = parts[:-1]
        mods[".".join(parts)] = (path, package)
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the selfsup modules it imports (``from pkg import mod`` counts as ``pkg.mod``
    when that is a module, else as ``pkg``)."""
    mods = _modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, (path, package) in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package[: len(package) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t.startswith("selfsup"):
                    found = owner(t)
                    if found and found != mod:
                        graph[mod].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_and_relative_imports():
    g = import_graph()
    assert "selfsup.runs" in g["selfsup.cli"] or "selfsup.runs" in g["selfsup.vision.train"]
    assert "selfsup.chem.optimize.gegl" in g["selfsup.chem.optimize.run"]
    assert "selfsup.data.registry" in g["selfsup.data.images"]  # imported inside a function


def test_no_import_cycle():
    assert cycles(import_graph()) == []


# The layers, lowest first: a module may import its own layer and the layers below it, never
# one above; chemistry and vision do not import each other.
LAYERS = [
    ("core", {"errors", "io", "config", "runs", "progress", "provenance", "device", "console"}),
    ("data", {"data"}),
    ("domains", {"chem", "vision"}),
    ("report", {"report", "bench"}),
    ("commands", {"cli", "demo", "__main__"}),
]


def layer_of(module: str) -> tuple[int, str]:
    parts = module.split(".")
    if len(parts) == 1:
        return 0, "core"
    for rank, (_, names) in enumerate(LAYERS):
        if parts[1] in names:
            return rank, parts[1]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_no_import_goes_up_a_layer_or_across_domains():
    bad = []
    for mod, targets in import_graph().items():
        rank, room = layer_of(mod)
        for t in targets:
            t_rank, t_room = layer_of(t)
            if t_rank > rank:
                bad.append(f"{mod} -> {t} (up from {LAYERS[rank][0]} to {LAYERS[t_rank][0]})")
            elif rank == t_rank == 2 and room != t_room:
                bad.append(f"{mod} -> {t} (across domains)")
    assert bad == []


# Inside chem/retro the sub-packages are layers too, lowest first: a retro module imports its own
# sub-package and the ones below it, never one above.
RETRO_LAYERS = ["core", "models", "training", "workflows"]


def retro_layer(module: str) -> int | None:
    """The rank of a module's retro sub-package; None outside it (the package itself too)."""
    parts = module.split(".")
    if parts[:3] != ["selfsup", "chem", "retro"] or len(parts) < 4:
        return None
    if parts[3] not in RETRO_LAYERS:
        raise AssertionError(f"{module} is in no retro sub-package: add it to RETRO_LAYERS")
    return RETRO_LAYERS.index(parts[3])


def test_retro_sub_packages_import_only_their_own_and_lower_ones():
    up = set()
    for mod, targets in import_graph().items():
        rank = retro_layer(mod)
        if rank is None:
            continue
        for t in targets:
            t_rank = retro_layer(t)
            if t_rank is not None and t_rank > rank:
                up.add((mod, t))
    assert sorted(up) == []


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Names imported when the module is imported: everything outside function bodies."""
    out: list[str] = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if not node.level and node.module:
                out.append(node.module)
        else:
            stack.extend(ast.iter_child_nodes(node))
    return out


def test_the_module_level_import_finder_skips_functions():
    tree = ast.parse("import os\nif True:\n    from torch import nn\ndef f():\n    import torch\n")
    assert sorted(_module_level_imports(tree)) == ["os", "torch"]


def test_retro_core_imports_no_torch_at_module_level():
    bad = []
    for mod, (path, _) in _modules().items():
        if mod == "selfsup.chem.retro.core" or mod.startswith("selfsup.chem.retro.core."):
            for name in _module_level_imports(ast.parse(path.read_text())):
                if name == "torch" or name.startswith("torch."):
                    bad.append(f"{mod} imports {name}")
    assert bad == []
