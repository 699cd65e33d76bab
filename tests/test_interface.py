"""Every experiment offers the names docs/architecture.md lists, with the same return types, and every "best" in a
sweep has its resolver."""

import inspect
import json
import typing

from medlib.experiments import EXPERIMENTS
from medlib.experiments.common import Evaluation, ExperimentData
from medlib.paths import REPO_ROOT

VERBS = ("check_parameters", "build_zoo", "load_data", "load_model", "fit", "evaluate", "table", "record", "headline",
         "what_to_notice")
PAPERS = [e for e in EXPERIMENTS.values() if e.has_code]


def test_every_experiment_offers_the_same_names():
    assert {e.name for e in PAPERS} == {"medblip", "clinicalblip", "minigpt_med", "adaptation"}
    for e in PAPERS:
        code, results = e.code(), e.results_code()
        for name in VERBS:
            assert callable(getattr(code, name, None)), f"medlib.experiments.{e.name} has no {name}"
        assert callable(getattr(results, "aggregate", None)), f"{e.name}_results has no aggregate"
        best = {k for sweep in e.sweeps for k, values in sweep.items() if "best" in values}
        assert best <= set(results.RESOLVERS), f"{e.name}: no resolver for {sorted(best - set(results.RESOLVERS))}"
        assert all(callable(f) for f in results.RESOLVERS.values())


def test_the_verbs_have_one_shape():
    """load_data gives ExperimentData, evaluate an Evaluation; record, headline and what_to_notice read an Evaluation;
    record takes the same six arguments everywhere, so every notebook ends with the same call."""
    for e in PAPERS:
        code = e.code()
        hints = {name: typing.get_type_hints(getattr(code, name)) for name in ("load_data", "evaluate", "record")}
        assert hints["load_data"]["return"] is ExperimentData, e.name
        assert hints["evaluate"]["return"] is Evaluation, e.name
        assert list(inspect.signature(code.record).parameters) == ["evaluation", "history", "trainable", "data", "lr",
                                                                   "batch_size"], e.name
        for name in ("headline", "what_to_notice"):
            assert next(iter(inspect.signature(getattr(code, name)).parameters)) == "evaluation", (e.name, name)


def test_each_notebook_trains_scores_and_finishes_through_its_module():
    """No bookkeeping on the page: the notebook calls fit, evaluate, saves the evaluation and finishes with record."""
    for e in PAPERS:
        code = "\n".join("".join(c["source"]) for c in json.loads(e.notebook.read_text())["cells"] if c["cell_type"] == "code")
        for call in ("exp.fit(", "exp.evaluate(", "evaluation.save(run)", "exp.record(evaluation, history, trainable, data,",
                     "exp.what_to_notice(evaluation"):
            assert call in code, f"{e.notebook_file}: no {call}"
        assert "run.save_rows" not in code and "run.finish(metrics=" not in code, e.notebook_file


def test_every_name_a_notebook_calls_in_medlib_exists():
    """A refactor that moves a function the notebooks call fails here, not in a reader's kernel."""
    import importlib
    import re

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


def test_evaluate_on_validation_reads_no_test_item():
    """Outside results/ a run reports validation (`Run.split`): nothing it writes or records comes from test. Notebooks 03
    and 04, the two whose committed arms are their only test-reading runs, on the smoke profile."""
    from medlib.experiments import adaptation, minigpt_med

    data = adaptation.load_data("smoke")
    model, tok, trainable = adaptation.load_model("smoke", "medblip", "small")
    ev = adaptation.evaluate(model, tok, data, "val", adaptation.image_indices(data.train, {"val": data.val, "test": data.test}))
    history = {"loss_curve": [], "train_seconds": 0.0, "seconds_per_epoch": 0.0, "device": "cpu"}
    rec = adaptation.record(ev, history, trainable, data, {}, 32)["metrics"]
    assert ev.split == "val" and {*ev.items.split, *ev.per_sample.split, *ev.predictions.split} == {"val"}
    assert rec["split"] == "val" and "test" not in rec and rec["val"] == ev.metrics

    data = minigpt_med.load_data("smoke", list(minigpt_med.ALL_TASKS), 0)
    model, tok, trainable = minigpt_med.load_model("smoke", 4, 8)
    feats = minigpt_med.cached_features(model, data.images, [s.index for s in data.images.studies], key="smoke:test")
    ev = minigpt_med.evaluate(model, tok, data, "val", feats, list(minigpt_med.ALL_TASKS), max_new_tokens=8)
    test_studies = {s.uid for s in data.images.split("test")}
    assert {*ev.items.split, *ev.per_sample.split, *ev.predictions.split} == {"val"}
    assert not {s["study"] for pool in ev.detail["pools"].values() for s in pool} & test_studies
    rec = minigpt_med.record(ev, {"loss_curve": []}, trainable, data, 0.0, 32)["metrics"]
    assert rec["split"] == "val" and rec["grounding"] == rec["val"] and {"vqa", "report"} <= set(rec)
