import json
import os

import pytest

from medlib import fileio
from medlib.params import ParameterError
from medlib.runs import is_finished, start


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


def test_a_finished_run_of_other_parameters_is_not_overwritten(tmp_path):
    out = str(tmp_path / "arm")
    start("data_tour", {"profile": "smoke", "seed": 0, "output_dir": out}).finish(metrics={})
    with pytest.raises(ParameterError, match="other parameters"):
        start("data_tour", {"profile": "smoke", "seed": 1, "output_dir": out})


def test_torn_run_json_counts_as_unfinished(tmp_path):
    (tmp_path / "run.json").write_text('{"run_info": {')
    assert not is_finished(tmp_path)


def test_weights_fingerprint_follows_the_weights_not_the_object():
    import torch

    from medlib.runs import weights_fingerprint

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

    from medlib.runs import git_state

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
