import json
import os

import pytest

from medlib import fileio
from medlib.experiments import start
from medlib.params import ParameterError
from medlib.runs import is_finished


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "table.csv"

    def broken(path):
        path.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        fileio.write_with(target, broken)
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    fileio.write_json(tmp_path / "a.json", {"x": 1})
    fileio.write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}


def test_manifest_has_three_parts_and_is_running_until_finished(tmp_path):
    ns = {"profile": "smoke", "seed": 3, "output_dir": str(tmp_path / "arm")}
    run = start("data_tour", ns)
    rec = json.loads((tmp_path / "arm" / "run.json").read_text())
    assert rec["train_info"]["status"] == "running" and not is_finished(tmp_path / "arm")
    run.data_fingerprint = "abc"
    run.finish(metrics={"m": 1.0}, trainable_params=5, total_params=10)
    rec = json.loads((tmp_path / "arm" / "run.json").read_text())
    assert set(rec) >= {"run_info", "train_info", "meta_info"}
    assert rec["run_info"]["seed"] == 3 and rec["run_info"]["profile"] == "smoke"
    assert rec["run_info"]["data_fingerprint"] == "abc"
    assert set(rec["run_info"]["git"]) == {"commit", "dirty"}
    assert {"python", "torch", "transformers", "peft"} <= set(rec["meta_info"]["versions"])
    assert rec["train_info"]["status"] == "finished" and rec["train_info"]["metrics"] == {"m": 1.0}


def test_a_finished_run_is_never_overwritten_unless_asked(tmp_path):
    out = str(tmp_path / "arm")
    start("data_tour", {"profile": "smoke", "seed": 0, "output_dir": out}).finish(metrics={})
    for seed in (1, 0):  # other parameters, or the same ones
        with pytest.raises(ParameterError, match="holds a finished run; set overwrite = True"):
            start("data_tour", {"profile": "smoke", "seed": seed, "output_dir": out})
    run = start("data_tour", {"profile": "smoke", "seed": 1, "output_dir": out, "overwrite": True})
    assert run.parameters["seed"] == 1 and not is_finished(out)


def test_torn_run_json_counts_as_unfinished(tmp_path):
    (tmp_path / "run.json").write_text('{"run_info": {')
    assert not is_finished(tmp_path)


def test_weights_fingerprint_follows_the_weights_not_the_object():
    import torch

    from medlib.paths import weights_fingerprint

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    b = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    b.load_state_dict(a.state_dict())
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        b[1].bias += 0.01  # the last tensor: a different encoder, so cached features must not be reused
    assert weights_fingerprint(a) != weights_fingerprint(b)
    assert weights_fingerprint(torch.nn.Linear(4, 3)) != weights_fingerprint(torch.nn.Linear(3, 4))


def test_dirty_means_code_changed_not_results(tmp_path):
    import subprocess

    from medlib.provenance import git_state

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("old")
    (tmp_path / "code.py").write_text("x = 1")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "results" / "table.md").write_text("rewritten by a reproduction")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2")
    assert git_state(tmp_path)["dirty"] is True


def test_profile_defaults_are_resolved_recorded_and_compared_resolved(tmp_path):
    """lr / batch_size 0 mean the profile's values (docs/papers.md, "training"): run.json records the
    resolved values, and a run that recorded 0 counts as the same arm as one that recorded the value."""
    from medlib.experiments import get

    spec = get("minigpt_med")
    resolved = spec.resolved({"profile": "paper", "lr": 0.0, "batch_size": 0})
    assert {k: resolved[k] for k in ("profile", "lr", "batch_size")} == {"profile": "paper", "lr": 1e-5, "batch_size": 6}
    # a parameter the record lacks (added to the notebook later) is compared at its notebook default
    assert resolved["seed"] == spec.parameters()["seed"].default
    assert spec.resolved({"profile": "tiny", "lr": 0.01, "batch_size": 0})["lr"] == 0.01
    assert get("clinicalblip").resolved({"profile": "paper", "lr": 0.0, "batch_size": 0})["batch_size"] == 128
    out = tmp_path / "arm"
    run = start("medblip", {"profile": "smoke", "output_dir": str(out)})
    assert (run.parameters["lr"], run.parameters["batch_size"]) == (2e-3, 32)
    run.finish(metrics={})
    recorded = json.loads((out / "run.json").read_text())["run_info"]["parameters"]
    assert (recorded["lr"], recorded["batch_size"]) == (2e-3, 32)
    full = {k: p.default for k, p in get("medblip").parameters().items()} | {"profile": "smoke", "output_dir": str(out)}
    assert is_finished(out, full, get("medblip").resolved) and not is_finished(out, full)


def test_reproduce_pools_the_sweeps_before_a_best_and_runs_each_arm_once(tmp_path, monkeypatch):
    """Sweeps without a "best" share one pool (no core idles between them); sweeps with a "best" wait for
    them, and consecutive ones share a pool too; an arm listed by two sweeps runs once."""
    from medlib import orchestrate
    from medlib.experiments import Experiment

    calls, ran = [], []
    spec = Experiment("medblip", "01_medblip_unfreeze_ratio.ipynb", "test",
                      sweeps=({"seed": [0, 1]}, {"seed": [1, 2]}, {"unfreeze_ratio": ["best"], "seed": [3]},
                              {"unfreeze_ratio": ["best"], "seed": [5]}, {"seed": [4]}))
    monkeypatch.setattr(orchestrate, "get", lambda name: spec)
    seen_when_resolved = []
    monkeypatch.setattr(spec.__class__, "resolve",
                        lambda self, grid, dirs: (seen_when_resolved.append(len(ran)), {**grid, "unfreeze_ratio": [0.25]})[1])
    monkeypatch.setattr(spec.__class__, "prepare_tiny", lambda self, pending=(): None)
    monkeypatch.setattr(orchestrate, "run_arm", lambda name, params, **kw: (ran.append(params) or (tmp_path, "finished")))
    monkeypatch.setattr(orchestrate, "write_index", lambda results: results / "README.md")
    real_sweep = orchestrate.sweep
    monkeypatch.setattr(orchestrate, "sweep", lambda name, grid, *a, **kw: (calls.append(grid), real_sweep(name, grid, *a, **kw))[1])
    monkeypatch.setattr("medlib.metrics.report.up_to_date", lambda out: True)
    orchestrate.reproduce(only=["medblip"], results=tmp_path, jobs=1)
    assert calls[0] == [{"seed": [0, 1]}, {"seed": [1, 2]}]
    assert calls[1] == [{"unfreeze_ratio": [0.25], "seed": [3]}, {"unfreeze_ratio": [0.25], "seed": [5]}]
    assert calls[2] == [{"seed": [4]}] and seen_when_resolved == [3, 3]  # both resolved after the first pool's 3 arms
    assert [p["seed"] for p in ran] == [0, 1, 2, 3, 5, 4]


def test_a_run_is_placed_among_the_committed_runs_of_its_arm(tmp_path):
    from medlib.report import against_committed

    def arm(folder, seed, value, weights, **params):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "run.json").write_text(json.dumps({
            "run_info": {"parameters": {"profile": "tiny", "seed": seed, "ratio": 0.5, "output_dir": folder, **params},
                         "profile": "tiny", "weights_fingerprint": weights},
            "train_info": {"status": "finished", "metrics": {"test": {"rougeL": value}}}}))
        return tmp_path / folder

    results = tmp_path / "results"
    for seed, value in ((0, 0.60), (1, 0.64)):
        arm(f"results/exp/tiny/seed={seed}", seed, value, "zooA")
    arm("results/exp/tiny/other", 0, 0.9, "zooA", ratio=1.0)  # another arm: not compared
    mine = arm("mine", 2, 0.62, "zooA")
    text = against_committed("exp", mine, "test.rougeL", results=results)
    assert "2 run(s) over 1 zoo build(s), from 0.6000 to 0.6400" in text and "**inside**" in text
    assert "other weights" not in text
    other = arm("other_zoo", 3, 0.70, "zooB")
    text = against_committed("exp", other, "test.rougeL", results=results)
    assert "**above**" in text and "other weights (`zooB`)" in text
    # a parameter added after the committed runs were made: they had its notebook default (notebook 01's lr_schedule)
    for seed, value in ((0, 0.60), (1, 0.64)):
        arm(f"results/medblip/tiny/seed={seed}", seed, value, "zooA")
    newer = arm("newer", 2, 0.62, "zooA", lr_schedule="linear")
    assert "2 run(s) over 1 zoo build(s)" in against_committed("medblip", newer, "test.rougeL", results=results)
    changed = arm("changed", 2, 0.62, "zooA", lr_schedule="plateau")
    assert "No committed" in against_committed("medblip", changed, "test.rougeL", results=results)


def test_a_run_that_read_validation_only_is_placed_among_the_committed_validation_numbers(tmp_path):
    from medlib.report import against_committed

    def arm(folder, seed, metrics):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "run.json").write_text(json.dumps({
            "run_info": {"parameters": {"profile": "tiny", "seed": seed, "output_dir": folder}, "profile": "tiny",
                         "weights_fingerprint": "zooA"},
            "train_info": {"status": "finished", "metrics": metrics}}))
        return tmp_path / folder

    for seed, (test, val) in enumerate(((0.60, 0.50), (0.64, 0.52))):
        arm(f"results/exp/tiny/seed={seed}", seed, {"split": "test", "rougeL": test, "val": {"rougeL": val}})
    mine = arm("mine", 2, {"split": "val", "rougeL": 0.51, "val": {"rougeL": 0.51}})
    text = against_committed("exp", mine, "rougeL", results=tmp_path / "results")
    assert "on validation, since it did not read test: `val.rougeL` = 0.5100" in text
    assert "from 0.5000 to 0.5200" in text and "**inside**" in text
