"""Every notebook runs top to bottom through papermill with profile="smoke"."""

import json
import subprocess
import sys

import pytest

from medlib.cli import main
from medlib.orchestrate import run_arm, sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


def test_data_tour_notebook_runs(results):
    out, status = run_arm("data_tour", {"profile": "smoke"}, results=results)
    rec = json.loads((out / "run.json").read_text())
    assert status == "finished" and rec["train_info"]["metrics"]["num_studies"] == 160
    assert (out / "gallery.png").exists() and (out / "notebook.ipynb").exists()


def test_medblip_notebook_writes_the_expected_metrics(results):
    out, status = run_arm("medblip", {"profile": "smoke", "num_epochs": 1}, results=results)
    rec = json.loads((out / "run.json").read_text())
    metrics = rec["train_info"]["metrics"]
    for key in ["rougeL", "rougeL_lo", "rougeL_hi", "rouge1", "rouge2", "bleu1", "bleu2", "bleu3", "bleu4",
                "closed_accuracy", "exact_match", "image_shuffled", "question_prior", "val"]:
        assert key in metrics
    import pandas as pd

    per = pd.read_csv(out / "per_sample.csv.gz")
    test, val = per[per.split == "test"], per[per.split == "val"]
    assert len(test) == rec["train_info"]["num_test_pairs"] and len(val) == rec["train_info"]["num_val_pairs"] > 0
    assert test[["rougeL", "shuffled_rougeL", "prior_rougeL"]].notna().all().all() and val.shuffled_rougeL.isna().all()
    assert len(pd.read_csv(out / "evaluation_items.csv.gz")) == len(per)
    assert rec["train_info"]["unfrozen_layers"] == [0, 1, 2, 14, 15]
    assert rec["run_info"]["data_fingerprint"] and rec["run_info"]["weights_fingerprint"]
    assert rec["meta_info"]["device"]["cpu_dispatch"]["torch_threads"] == 1
    for name in ("evaluation_items.csv.gz", "linear_probe.csv", "presence_by_finding.csv", "answer_concentration.csv"):
        assert (out / name).exists(), name


def test_sweep_over_two_ratios_collects_one_table_and_skips_finished_arms(results):
    grid = {"unfreeze_ratio": [0.0, 0.25]}
    first = sweep("medblip", grid, {"profile": "smoke", "num_epochs": 1}, results=results)
    assert len(first["finished"]) + len(first["skipped"]) == 2 and not first["failed"]
    summary = (results / "medblip" / "smoke" / "summary.csv").read_text()
    assert "0.25" in summary and "0.0" in summary
    again = sweep("medblip", grid, {"profile": "smoke", "num_epochs": 1}, results=results)
    assert len(again["skipped"]) == 2


def test_a_failed_arm_does_not_sink_the_sweep(results, monkeypatch):
    import medlib.orchestrate as cli

    real = cli.run_arm

    def flaky(experiment, params, **kw):
        if params.get("seed") == 1:
            raise RuntimeError("out of memory")
        return real(experiment, params, **kw)

    monkeypatch.setattr(cli, "run_arm", flaky)
    out = sweep("data_tour", {"seed": [0, 1]}, {"profile": "smoke"}, results=results, aggregate=False)
    assert len(out["failed"]) == 1 and "out of memory" in out["failed"][0]["error"]


def test_cli_refuses_unknown_parameter_before_running(capsys):
    code = main(["run", "medblip", "-p", "unfreeze_rate", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown parameter 'unfreeze_rate'" in err and "unfreeze_ratio (float" in err


def test_cli_refuses_wrong_type(capsys):
    assert main(["sweep", "medblip", "--grid", "seed=a,b"]) == 2
    assert "expects int" in capsys.readouterr().err


def test_python_dash_m_medlib_lists_experiments():
    out = subprocess.run([sys.executable, "-m", "medlib", "list"], capture_output=True, text=True, check=True).stdout
    assert "medblip" in out and "unfreeze_ratio (float, default 0.3125)" in out


def test_same_smoke_run_twice_gives_identical_metrics_and_another_seed_differs(tmp_path):
    a, _ = run_arm("medblip", {"profile": "smoke", "num_epochs": 1}, output_dir=tmp_path / "a")
    b, _ = run_arm("medblip", {"profile": "smoke", "num_epochs": 1}, output_dir=tmp_path / "b")
    c, _ = run_arm("medblip", {"profile": "smoke", "num_epochs": 1, "seed": 7}, output_dir=tmp_path / "c")

    def metrics(d):
        rec = json.loads((d / "run.json").read_text())
        return rec["train_info"]["metrics"], rec["train_info"]["loss_curve"]

    assert metrics(a) == metrics(b)
    assert metrics(a)[1] != metrics(c)[1]


def test_plain_papermill_still_works(tmp_path):
    import papermill

    from medlib.experiments import get

    out = tmp_path / "tour"
    papermill.execute_notebook(str(get("data_tour").notebook), str(tmp_path / "out.ipynb"), kernel_name="python3",
                               parameters={"profile": "smoke", "output_dir": str(out)}, progress_bar=False)
    assert json.loads((out / "run.json").read_text())["train_info"]["status"] == "finished"


def test_clinicalblip_sweep_writes_metrics_baselines_and_the_stage_comparison(results):
    from medlib.experiments.clinicalblip import DECODINGS

    grid = {"stages": ["stage1", "stage1+2"], "prior": ["indication+checklist"]}
    out = sweep("clinicalblip", grid, {"profile": "smoke", "epochs": 2, "epochs_stage1": 1, "max_new_tokens": 20},
                results=results)
    assert not out["failed"] and len(out["finished"]) + len(out["skipped"]) == 2
    runs = [json.loads(p.read_text()) for p in (results / "clinicalblip" / "smoke").glob("*/run.json")]
    info = next(r["train_info"] for r in runs if r["run_info"]["parameters"]["stages"] == "stage1+2")
    assert [(s["stage"], s["epochs"]) for s in info["stages"]] == [("stage1", 1), ("stage2", 1)]
    single = next(r["train_info"] for r in runs if r["run_info"]["parameters"]["stages"] == "stage1")
    assert [(s["stage"], s["epochs"]) for s in single["stages"]] == [("stage1", 2)]  # one budget for every arm
    for key in ["bleu1", "bleu4", "meteor", "rougeL", "rougeL_rouge_score", "cider", "ce_micro_f1", "ce_micro_f1_lo", "ce13_micro_f1",
                "ce13_micro_f1_lo", "ce13_macro_f1", "ce5_micro_f1", "abnormal_share", "bert_sim", "baseline_common",
                "baseline_random", "baseline_retrieval", "image_shuffled", "val"]:
        assert key in info["metrics"]
    assert info["metrics"]["split"] == "test"
    assert (info["decoding"]["num_beams"], info["decoding"]["repetition_penalty"]) in {(b, r) for b, r in DECODINGS}
    agg = results / "clinicalblip" / "smoke"
    arm = next(p.parent for p in agg.glob("*/run.json") if "stages=stage1," in p.parent.name or p.parent.name.endswith("stages=stage1"))
    import pandas as pd
    reports = pd.read_csv(arm / "predictions.csv.gz", keep_default_na=False)
    scored = pd.read_csv(arm / "per_sample.csv.gz", keep_default_na=False)
    assert len(reports) == len(scored[scored.condition.isin(["model", "image_shuffled"])])
    assert (agg / "ce_by_stage.png").exists() and (agg / "verdict.md").exists()
    claim = (agg / "claim.csv").read_text()
    assert "stage 1 -> 2 beats stage 1 alone" in claim and "image-shuffled control" in claim and "prior-knowledge" not in claim
    # no oracle-leak arm ran: the verdict says the sanity check did not run
    verdict = (agg / "verdict.md").read_text()
    assert "Sanity check not run" in verdict and "**The paper's claim** (" in verdict


def test_clinicalblip_with_a_fixed_decoding_skips_the_choice_on_validation(tmp_path):
    """num_beams and repetition_penalty given: that decoding is used as given, and recorded as not chosen."""
    out, status = run_arm("clinicalblip", {"profile": "smoke", "stages": "zero-shot", "max_new_tokens": 10,
                                           "num_beams": 1, "repetition_penalty": 1.0}, output_dir=tmp_path / "fixed")
    decoding = json.loads((out / "run.json").read_text())["train_info"]["decoding"]
    assert (decoding["num_beams"], decoding["repetition_penalty"]) == (1, 1.0)
    assert decoding["chosen_on_validation"] is None


def test_minigpt_med_notebook_scores_grounding_strictly_and_leniently(results):
    import pandas as pd

    out, status = run_arm("minigpt_med", {"profile": "smoke", "num_epochs": 1}, results=results)
    rec = json.loads((out / "run.json").read_text())
    metrics = rec["train_info"]["metrics"]
    for key in ["iou_strict", "iou_strict_lo", "iou_strict_hi", "acc_at_05", "rsna_map", "iou_lenient", "parsable_share",
                "iou_strict_variable", "iou_strict_variable_lo", "iou_strict_fixed"]:
        assert key in metrics["grounding"]
    assert {"image_shuffled", "label_prior", "val", "baseline_mean_box", "baseline_centred", "vqa", "report", "per_class"} <= set(metrics)
    # every validation and test finding's scores, in the order of the evaluation items; the controls on test only
    per, items = pd.read_csv(out / "per_sample.csv.gz"), pd.read_csv(out / "evaluation_items.csv.gz")
    assert len(per) == len(items) and (per.study == items.study).all() and set(per.position) <= {"fixed", "variable"}
    test, val = per[per.split == "test"], per[per.split == "val"]
    assert len(test) == rec["train_info"]["num_test_findings"] and len(val) == rec["train_info"]["num_val_findings"] > 0
    assert test[["iou_strict", "shuffled_iou_strict", "prior_iou_strict"]].notna().all().all() and val.prior_iou_strict.isna().all()
    assert {"gallery.png", "iou_by_finding.png", "linear_probe.csv", "where_probe.csv"} <= {p.name for p in out.iterdir()}


def test_minigpt_med_aggregation_tests_the_claim_part_by_part(results):
    """Two seeds of the claim's arm and its starting checkpoint as it is -> the tables, the claim's parts and the
    computed verdict."""
    import pandas as pd

    grounding = ["detection", "refer", "identify"]
    sweep("minigpt_med", {"tasks": [grounding], "zero_shot": [False, True], "seed": [0, 1]},
          fixed={"profile": "smoke", "num_epochs": 1}, results=results, jobs=2)
    agg = results / "minigpt_med" / "smoke"
    summary, claim = pd.read_csv(agg / "summary.csv"), pd.read_csv(agg / "claim.csv")
    from medlib.experiments import minigpt_med_results as res

    assert summary.system.iloc[-1] == "label prior (no image)"
    assert list(summary.system[:2]) == [res.system_name(res.PAPER_ARM), res.system_name(res.ZERO_SHOT)]
    assert list(claim.part) == ["beats_prior", "image", "fine_tuning_adds"] and (claim.runs == 2).all()
    zero_shot = json.loads(next(agg.glob("*zero_shot=True*/run.json")).read_text())["train_info"]
    assert zero_shot["loss_curve"] == [] and 0 <= zero_shot["metrics"]["anatomy"]["iou_strict"] <= 1
    assert set(zero_shot["metrics"]["anatomy"]) >= {"heart", "right lung", "spine"}
    text = (agg / "verdict.md").read_text()
    assert "**Starting checkpoint**" in text and "fine-tuning adds over its starting checkpoint" in text
    assert {"iou_by_arm.png", "iou_by_finding.png", "claim.md", "headline.json"} <= {p.name for p in agg.iterdir()}


def test_a_run_writes_nothing_outside_its_output_folder_and_the_cache(tmp_path):
    from medlib.runs import REPO_ROOT

    def tree_state():
        # Tracked files (results/ included) and untracked files git does not ignore; ignored caches of
        # other tools (bytecode, hypothesis, egg-info) are not a run's output.
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO_ROOT,
                              capture_output=True, text=True).stdout

    before = tree_state()
    run_arm("data_tour", {"profile": "smoke", "seed": 3}, output_dir=tmp_path / "out")
    after = tree_state()
    assert before == after
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"run.json", "notebook.ipynb"}


def test_the_network_guard_is_on():
    import socket

    with pytest.raises(RuntimeError, match="reach the network"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_tiny_profile_runs_are_deterministic_and_the_seed_matters(tmp_path, monkeypatch):
    """The tiny profile end to end from the shipped zoo (`tests/test_zoo_shipped.py` keeps the build path honest):
    the same ClinicalBLIP arm twice gives identical numbers and another seed does not.
    The three arms run side by side, one thread each, as a sweep runs them: the same numbers as one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from medlib.zoo.clinicalblip import build_clinicalblip_zoo

    build_clinicalblip_zoo(progress=False)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    # one decoding fixed (not chosen on validation among exp.DECODINGS): the beam search is most of an arm's time
    params = {"profile": "tiny", "stages": "stage1+2", "epochs": 2, "epochs_stage1": 1, "max_new_tokens": 24,
              "max_train_reports": 160, "num_beams": 1, "repetition_penalty": 1.0}
    arms = (("a", params), ("b", params), ("c", {**params, "seed": 1}))
    with ThreadPoolExecutor(max_workers=len(arms)) as pool:
        runs = list(pool.map(lambda arm: run_arm("clinicalblip", arm[1], output_dir=tmp_path / arm[0])[0], arms))
    import pandas as pd

    a, b, c = (json.loads((d / "run.json").read_text())["train_info"] for d in runs)
    assert a["metrics"] == b["metrics"]
    pd.testing.assert_frame_equal(*(pd.read_csv(d / "per_sample.csv.gz", dtype={"labels": str}) for d in runs[:2]))
    assert [s["loss_curve"] for s in a["stages"]] == [s["loss_curve"] for s in b["stages"]]
    assert [s["loss_curve"] for s in a["stages"]] != [s["loss_curve"] for s in c["stages"]]


def test_a_notebook_killed_mid_training_resumes_to_the_same_numbers(tmp_path):
    """SIGKILL to the whole run (medlib, papermill and the kernel doing the training) once a checkpoint
    exists; re-running into the same folder resumes from it and ends with an uninterrupted run's numbers."""
    import os
    import random
    import signal
    import time

    import pandas as pd
    import psutil

    params = {"profile": "smoke", "num_epochs": 3, "checkpoint_every": 2}
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "medlib", "run", "medblip", "--profile", "smoke", "-p", "num_epochs", "3",
           "-p", "checkpoint_every", "2", "--output-dir", str(killed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (killed / "checkpoint.pt").exists():
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.1)
        time.sleep(random.uniform(0, 1))  # a random later step: resume must hold at any of them
    finally:
        family = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        for p in family:
            p.send_signal(signal.SIGKILL)  # the kernel runs in its own session: kill it by pid
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert json.loads((killed / "run.json").read_text())["train_info"]["status"] != "finished"
    resumed, status = run_arm("medblip", params, output_dir=killed)
    clean, _ = run_arm("medblip", params, output_dir=tmp_path / "clean")
    a = json.loads((resumed / "run.json").read_text())["train_info"]
    b = json.loads((clean / "run.json").read_text())["train_info"]
    assert status == "finished"
    assert a["loss_curve"] == b["loss_curve"]
    assert a["metrics"]["rougeL"] == b["metrics"]["rougeL"]
    # MedBLIP keeps its per-question scores beside run.json, compressed: they must match row for row.
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "per_sample.csv.gz"), pd.read_csv(clean / "per_sample.csv.gz"))
    assert not (resumed / "checkpoint.pt").exists()


def test_adaptation_notebook_runs_clinicalblips_two_stages_and_scores_every_task(results):
    """Notebook 04 on the smoke profile, the two-stage recipe (stage 1 trains the ViT, so its features are recomputed
    for stage 2 and evaluation): every task scored with its controls, one score row per evaluation item."""
    import pandas as pd

    out, status = run_arm("adaptation", {"profile": "smoke", "recipe": "clinicalblip"}, results=results)
    rec = json.loads((out / "run.json").read_text())
    assert status == "finished"
    m, t = rec["train_info"]["metrics"], rec["train_info"]
    assert set(m["test"]) == {"vqa", "report", "grounding"} and set(m) >= {"image_shuffled", "text_prior", "val"}
    assert [s["stage"] for s in t["stages"]] == ["stage1", "stage2"] and t["seconds_per_epoch"] > 0 and t["peak_memory_mb"] > 0
    rows = pd.read_csv(out / "per_sample.csv.gz")
    items = pd.read_csv(out / "evaluation_items.csv.gz")
    assert len(rows) == len(items) and rows.shuffled_rougeL[rows.split == "val"].isna().all()
