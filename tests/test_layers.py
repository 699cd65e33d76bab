"""The package's layers hold: no import cycle inside `medlib`, counting imports made inside functions too
(a function-local import hides a cycle from Python, not from a reader)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medlib"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in modules:  # `from medlib.data import synthcxr` names a module too
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("medlib") and t != "medlib":
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_inside_medlib():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


# The package's layers, lowest first: a module imports only from its own layer or lower ones, counting imports made
# inside functions. docs/layout.md states this order; `test_the_layout_page_states_this_order` keeps them one.
LAYERS = [
    ("fileio", "params", "seeding", "profiles", "device"),
    ("paths", "boxes"),
    ("provenance", "tables"),
    ("data",),
    ("metrics", "claims"),
    ("models",),
    ("train", "parallel", "resources"),
    ("zoo",),
    ("runs", "plots"),
    ("experiments",),
    ("report", "orchestrate"),
    ("cli", "gpu_check", "__main__"),
]


def layer_of(module: str) -> int:
    top = module.split(".")[1]
    for k, names in enumerate(LAYERS):
        if top in names:
            return k
    raise AssertionError(f"{module}: in no layer of tests/test_layers.py LAYERS; add it where its imports put it")


def test_every_import_goes_down_the_layers():
    graph = import_graph()
    up = sorted(f"{m} -> {t}" for m, deps in graph.items() if m != "medlib" for t in deps if layer_of(t) > layer_of(m))
    assert not up, f"imports of a higher layer: {up}"


def test_the_architecture_page_states_this_order():
    rows = [line.split("|") for line in (PACKAGE.parent / "docs" / "architecture.md").read_text().splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    stated = [tuple(n.strip(" `") for n in row[2].split(",")) for row in rows]
    assert stated == LAYERS, f"docs/architecture.md's layer table should list, lowest first: {LAYERS}"
