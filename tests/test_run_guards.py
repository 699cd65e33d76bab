"""A run refuses bad parameters and places before anything starts, never overwrites a finished run
unasked, and says how it ended (docs/bad_inputs.md #38-#45)."""

import json
import os
import stat

import pytest

from medlib.cli import main
from medlib.paths import REPO_ROOT


@pytest.mark.parametrize("name,value,says", [
    ("seed", "-1", "outside [0, 4294967295]"),
    ("seed", "99999999999999999999999", "outside [0, 4294967295]"),
    ("batch_size", "-4", "outside [0, 4096]"),
    ("lr", "-0.5", "outside [0, 1]"),
    ("max_new_tokens", "0", "outside [1, 512]"),
    ("num_epochs", "-1", "outside [0, 1000]"),
    ("zoo_seed", "101", "outside [0, 100]"),
    ("unfreeze_ratio", "0.3", "step 0.03125"),
    ("device", "gpu0", "use auto, cpu, cuda"),
])
def test_out_of_range_values_are_refused_before_a_folder_exists(tmp_path, capsys, name, value, says):
    out = tmp_path / "arm"
    assert main(["run", "medblip", "--profile", "smoke", "-p", name, value, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert says in err and repr(name) in err
    assert not out.exists()


def test_a_sweep_checks_every_arm_first(tmp_path, capsys):
    assert main(["sweep", "medblip", "--profile", "smoke", "--grid", "seed=0,-3"]) == 2
    assert "outside [0, 4294967295]" in capsys.readouterr().err


@pytest.mark.parametrize("experiment,params,says", [
    ("medblip", ["--profile", "paper"], "needs parameter 'diff_vqa_csv'"),
    ("clinicalblip", ["--profile", "paper", "-p", "annotation", "/no/such.json", "-p", "image_root", "/"], "no such file"),
    ("medblip", ["--profile", "smoke", "-p", "zoo_seed", "1"], "zoo_seed picks a build of the tiny zoo"),
    # a whole layer of OPT-2.7B's 32 (the parameter's step), not of the tiny OPT's 16
    ("medblip", ["--profile", "smoke", "-p", "unfreeze_ratio", "0.03125"], "unfreeze_ratio on the smoke profile"),
    ("minigpt_med", ["-p", "tasks", "[]"], "'tasks' is empty"),
    ("minigpt_med", ["-p", "image_size", "100"], "not an even number of 16 px patches"),
    ("minigpt_med", ["--profile", "paper", "-p", "tasks", "detection,vqa"], "RSNA Pneumonia has boxes only"),
    ("minigpt_med", ["--profile", "smoke", "-p", "grounding_stage", "none"], "the smoke profile has no grounding stage"),
    ("minigpt_med", ["-p", "grounding_stage", "none", "-p", "zero_shot", "True"], "a projection nothing has trained"),
])
def test_combinations_a_run_would_refuse_later_are_refused_first(capsys, experiment, params, says):
    assert main(["run", experiment, *params]) == 2
    assert says in capsys.readouterr().err


def test_output_dir_naming_a_file_is_refused(tmp_path, capsys):
    afile = tmp_path / "taken"
    afile.write_text("x")
    assert main(["run", "data_tour", "--profile", "smoke", "--output-dir", str(afile)]) == 2
    assert f"--output-dir = {str(afile)!r} is a file" in capsys.readouterr().err
    assert main(["run", "data_tour", "--profile", "smoke", "--output-dir", str(afile / "sub")]) == 2
    assert "lies under" in capsys.readouterr().err


def test_medlib_cache_naming_a_file_is_refused(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "cache"
    afile.write_text("x")
    monkeypatch.setenv("MEDLIB_CACHE", str(afile))
    assert main(["run", "data_tour", "--profile", "smoke", "--output-dir", str(tmp_path / "out")]) == 2
    assert "MEDLIB_CACHE" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_files_follow_the_umask(tmp_path):
    from medlib import fileio

    path = fileio.write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~fileio._umask()


def _papermill(notebook, out_nb, **parameters):
    import papermill

    papermill.execute_notebook(str(notebook), str(out_nb), kernel_name="python3", parameters=parameters, progress_bar=False)


@pytest.mark.slow
def test_plain_papermill_refuses_unknown_names_and_a_finished_folder_and_defaults_to_my_runs(tmp_path):
    import papermill

    from medlib.experiments import get

    nb = get("data_tour").notebook
    with pytest.raises(papermill.PapermillExecutionError, match="unknown parameter\\(s\\) \\['no_such_param'\\]"):
        _papermill(nb, tmp_path / "a.ipynb", profile="smoke", no_such_param=1, output_dir=str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    done = tmp_path / "done"
    _papermill(nb, tmp_path / "b.ipynb", profile="smoke", output_dir=str(done))
    before = (done / "run.json").read_text()
    with pytest.raises(papermill.PapermillExecutionError, match="holds a finished run; set overwrite = True"):
        _papermill(nb, tmp_path / "c.ipynb", profile="smoke", output_dir=str(done))
    assert (done / "run.json").read_text() == before
    _papermill(nb, tmp_path / "d.ipynb", profile="smoke", output_dir=str(done), overwrite=True)
    assert json.loads((done / "run.json").read_text())["train_info"]["status"] == "finished"
    # No output_dir (what Run All and nbconvert do): a new folder under my_runs/, never results/.
    root = REPO_ROOT / "my_runs" / "data_tour" / "smoke" / "default"
    existing = set(root.glob("*")) if root.exists() else set()
    committed = REPO_ROOT / "results" / "data_tour" / "tiny" / "default" / "run.json"
    committed_before = committed.read_text() if committed.exists() else None
    _papermill(nb, tmp_path / "e.ipynb", profile="smoke")
    new = set(root.glob("*")) - existing
    try:
        assert len(new) == 1 and json.loads((new.pop() / "run.json").read_text())["train_info"]["status"] == "finished"
    finally:
        import shutil

        for d in set(root.glob("*")) - existing:
            shutil.rmtree(d)
    assert (committed.read_text() if committed.exists() else None) == committed_before


@pytest.mark.slow
def test_a_run_that_fails_says_failed_with_the_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA, where device=cuda fails after the run has started")
    out = tmp_path / "arm"
    assert main(["run", "medblip", "--profile", "smoke", "-p", "device", "cuda", "--output-dir", str(out)]) != 0
    record = json.loads((out / "run.json").read_text())
    assert record["train_info"]["status"] == "failed"
    assert "torch sees no CUDA GPU" in record["train_info"]["error"]


def test_test_is_read_by_the_results_tree_only_unless_asked(tmp_path):
    from medlib.experiments import INTERACTIVE_RUNS, reads_test

    p = {"profile": "tiny", "evaluate_test": False}
    assert reads_test("medblip", p, tmp_path / "results" / "medblip" / "tiny" / "seed=1")
    assert not reads_test("medblip", p, tmp_path / "scratch")
    assert not reads_test("medblip", p, tmp_path / INTERACTIVE_RUNS / "medblip" / "tiny" / "default" / "20261207")
    assert not reads_test("medblip", p, tmp_path / "results" / "medblip" / "smoke" / "default")  # another profile's folder
    assert reads_test("medblip", {**p, "evaluate_test": True}, tmp_path / "scratch")
    assert reads_test("clinicalblip", {"profile": "tiny"}, tmp_path / "scratch")  # no such parameter: always
