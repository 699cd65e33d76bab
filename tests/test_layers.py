"""The package's layers hold: no import cycle inside `medlib`, counting imports made inside functions too
(a function-local import hides a cycle from Python, not from a reader)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "medlib"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(node, inside a function) for every import of a module file, at any depth."""
    out = []

    def walk(body, inside):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                walk(node.body, True)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.append((node, inside))
            for name in ("body", "orelse", "finalbody", "handlers"):
                if isinstance(getattr(node, name, None), list):
                    walk(getattr(node, name), inside)

    walk(ast.parse(path.read_text(encoding="utf-8")).body, False)
    return out


def _targets(node, name: str, path: Path, modules) -> set[str]:
    """The medlib modules an import statement of module `name` names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
        # `from medlib.experiments import common` names the module common, not the package's own code:
        # the package counts only for the names that are not modules of it
        subs = [f"{base}.{a.name}" for a in node.names]
        targets = subs if all(t in modules for t in subs) else [base] + subs
    out = set()
    for t in targets:
        while t and t not in modules:  # `from medlib.data import synthcxr` names a module too
            t = t.rpartition(".")[0]
        if t and t != name and t.startswith("medlib") and t != "medlib":
            out.add(t)
    return out


def import_graph(inside_functions: bool = True) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node, inside in _imports(path):
            if inside_functions or not inside:
                graph[name] |= _targets(node, name, path, modules)
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
# inside functions. docs/architecture.md states this order; `test_the_architecture_page_states_this_order` keeps them one.
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


# A function-local import is for a package that is heavy to import (seconds measured on a 2-core machine, after numpy)
# or needed only inside a running kernel; every other import sits at the top of its module, where a reader looks first.
HEAVY_OR_KERNEL_ONLY = {
    "torch": "1.2 s: `medlib list` and the parameter checks run without it",
    "transformers": "about 2 s with its model classes",
    "peft": "2.4 s", "timm": "1.6 s", "accelerate": "1.2 s, and only under `accelerate launch`",
    "safetensors": "1.0 s (it loads torch)", "sentence_transformers": "4.8 s", "sklearn": "0.8 s", "statsmodels": "0.6 s",
    "seaborn": "1.0 s", "matplotlib": "0.3 s, figures only", "pandas": "0.2 s, kept out of `medlib list`",
    "scipy": "0.1-0.2 s a submodule", "rouge_score": "1.0 s", "nltk": "1.0 s", "papermill": "0.9 s",
    "jupyter_client": "only where a kernel starts", "IPython": "only inside a kernel", "ipywidgets": "only inside a kernel",
}
# The modules that import part of medlib inside a function, and why: each keeps a light command light.
LOCAL_MEDLIB_IMPORTS = {
    "medlib.cli": "`medlib list` and `medlib --help` answer without torch, the zoo or the metrics",
    "medlib.orchestrate": "`medlib list` imports it; the metrics tables load torch and pandas",
    "medlib.report": "`medlib list` imports it; the aggregation modules load pandas",
    "medlib.experiments": "the registry names each experiment's modules; they load torch and the models",
}


def test_function_local_imports_are_heavy_or_kernel_only_and_not_already_loaded():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    top_packages = {}
    for name, path in modules.items():
        top_packages[name] = {(n.names[0].name if isinstance(n, ast.Import) else n.module or "").split(".")[0]
                              for n, inside in _imports(path) if not inside and not getattr(n, "level", 0)}
    module_level = import_graph(inside_functions=False)

    def loaded(name):  # every medlib module importing `name` runs, itself and its packages included
        seen, todo = set(), [name]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += [p for p in (m.rsplit(".", k)[0] for k in range(1, m.count(".") + 1)) if p in modules]
                todo += module_level[m]
        return seen

    problems = []
    for name, path in modules.items():
        already = loaded(name)
        packages = set().union(*(top_packages[m] for m in already))
        for node, inside in _imports(path):
            if not inside or isinstance(node, ast.ImportFrom) and node.level:
                continue
            target = node.names[0].name if isinstance(node, ast.Import) else node.module
            top = target.split(".")[0]
            where = f"{name} line {node.lineno}: {target}"
            if top == "medlib":
                if name not in LOCAL_MEDLIB_IMPORTS:
                    problems.append(f"{where}: a function-local import of medlib in a module without a reason")
            elif top not in HEAVY_OR_KERNEL_ONLY:
                problems.append(f"{where}: light or core; import it at the top")
            elif top in packages:
                problems.append(f"{where}: the module has loaded {top} already; import it at the top")
    assert not problems, "\n".join(problems)


def test_every_module_is_under_400_lines_and_every_function_under_80():
    """Sizes a reader can hold: docs/architecture.md says where each thing lives, so nothing grows past them."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) >= 400:
            long.append(f"{path.relative_to(PACKAGE.parent)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.relative_to(PACKAGE.parent)}: {node.name} has {node.end_lineno - node.lineno + 1} lines")
    assert not long, "\n".join(long)
