"""Every experiment offers the names docs/architecture.md lists, and every "best" in a sweep has its resolver."""

from medlib.experiments import EXPERIMENTS


def test_every_experiment_offers_the_same_names():
    papers = [e for e in EXPERIMENTS.values() if e.has_code]
    assert {e.name for e in papers} == {"medblip", "clinicalblip", "minigpt_med", "adaptation"}
    for e in papers:
        code, results = e.code(), e.results_code()
        for name in ("check_parameters", "build_zoo", "load_data", "load_model", "fit"):
            assert callable(getattr(code, name, None)), f"medlib.experiments.{e.name} has no {name}"
        assert callable(getattr(results, "aggregate", None)), f"{e.name}_results has no aggregate"
        best = {k for sweep in e.sweeps for k, values in sweep.items() if "best" in values}
        assert best <= set(results.RESOLVERS), f"{e.name}: no resolver for {sorted(best - set(results.RESOLVERS))}"
        assert all(callable(f) for f in results.RESOLVERS.values())
    for e in ("medblip", "adaptation"):  # docs/architecture.md: the experiments that score through their module
        assert callable(EXPERIMENTS[e].code().evaluate)


def test_every_name_a_notebook_calls_in_medlib_exists():
    """A refactor that moves a function the notebooks call fails here, not in a reader's kernel."""
    import importlib
    import json
    import re

    from medlib.paths import REPO_ROOT

    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        aliases = {m.group(2) or m.group(1).rsplit(".", 1)[-1]: m.group(1)
                   for m in re.finditer(r"^import (medlib[\w.]*)(?: as (\w+))?$", code, re.M)}
        for m in re.finditer(r"^from (medlib[\w.]*) import (.+)$", code, re.M):
            for item in m.group(2).split(","):
                name, _, alias = item.strip().partition(" as ")
                full = f"{m.group(1)}.{name}"
                try:
                    importlib.import_module(full)
                    aliases[alias or name] = full
                except ModuleNotFoundError:
                    assert hasattr(importlib.import_module(m.group(1)), name), f"{path.name}: {full} does not exist"
        for alias, module in aliases.items():
            mod = importlib.import_module(module)
            for attr in set(re.findall(rf"\b{alias}\.(\w+)", code)):
                assert hasattr(mod, attr), f"{path.name}: {alias}.{attr} ({module}) does not exist"
