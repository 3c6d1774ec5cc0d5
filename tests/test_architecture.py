"""The package's shape, checked mechanically: no import cycles among ``fetal_detect`` modules (an AST
import graph, lazy imports inside functions included) and no module over 450 lines. Nothing is allow-listed."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "fetal_detect"
MAX_LINES = 450
# The layers of docs/architecture.md: a module may import its own layer and the ones below, never above.
LAYERS = {
    0: ("errors", "settings", "tasks", "measurers", "result"),  # core: the two tables, the result schema
    1: ("io", "dicom", "image_headers", "preprocess", "report", "measure", "data", "runtime"),  # primitives
    2: ("pipeline",),  # measurers (model -> numbers) and analyze (router -> Result)
    3: ("engine", "evaluate", "export", "bench", "batch", "gan", "ablation", "serve"),  # consumers
    4: ("commands", "cli", "__main__"),  # the CLI
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(mods: dict[str, Path], name: str) -> str | None:
    """The longest known module prefix of a dotted import target (``a.b.c`` -> ``a.b`` if that is a module)."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """module -> the fetal_detect modules it imports anywhere in the file (lazy imports in functions count).

    ``from pkg import name`` is an edge to ``pkg`` (its ``__init__`` runs) and, when ``name`` is a
    submodule, to ``pkg.name`` as well."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg_parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg_parts = pkg_parts[:len(pkg_parts) - node.level + 1]
                    base = ".".join(pkg_parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                if not t.startswith("fetal_detect"):
                    continue
                r = _resolve(mods, t)
                if r and r != mod:
                    graph[mod].add(r)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles_among_fetal_detect_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # fetal_detect/__init__
    for name in (parts[1], parts[1].split("_")[0]):  # bench_stages belongs where bench does
        for level, names in LAYERS.items():
            if name in names:
                return level
    raise AssertionError(f"{module}: in no layer of LAYERS (add it to docs/architecture.md and here)")


def test_layers_import_downward_only():
    up = [f"{m} (layer {layer_of(m)}) -> {d} (layer {layer_of(d)})"
          for m, deps in import_graph().items() for d in deps if layer_of(d) > layer_of(m)]
    assert not up, "upward imports:\n" + "\n".join(sorted(up))


def test_the_data_layer_knows_no_training_gan_or_evaluation():
    bad = [f"{m} -> {d}" for m, deps in import_graph().items() if m.startswith("fetal_detect.data")
           for d in deps if d.split(".")[1:2] in (["engine"], ["gan"], ["evaluate"], ["pipeline"])]
    assert not bad, bad


def test_the_graph_sees_lazy_and_package_imports():
    graph = import_graph()
    assert "fetal_detect.runtime.onnx_predictor" in graph["fetal_detect.runtime"]  # lazy, inside a function
    assert "fetal_detect.runtime.base" in graph["fetal_detect.runtime.onnx_predictor"]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_module_over_450_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
