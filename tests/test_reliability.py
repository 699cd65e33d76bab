"""A run folder belongs to one run, Ctrl-C stops a sweep, an arm runs the same whatever ran before it in its
process, and the smaller holes of docs/bad_inputs.md #55-#66: each test fails on the code before these fixes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medlib.cli import main
from medlib.params import ParameterError
from medlib.paths import REPO_ROOT
from medlib.runs import LOCK_FILE, RunFolderBusy, RunFolderLock, check_resumable, clear_run_folder


def _unfinished_run(folder: Path, status="interrupted", **params) -> None:
    """What a killed or interrupted smoke arm leaves: run.json of its parameters and a checkpoint."""
    folder.mkdir(parents=True)
    parameters = {"profile": "smoke", "seed": 0, "unfreeze_ratio": 0.3125, **params}
    (folder / "run.json").write_text(json.dumps({"run_info": {"parameters": parameters, "git": {"commit": None}},
                                                 "train_info": {"status": status}}))
    (folder / "checkpoint.pt").write_bytes(b"the checkpoint of the earlier run")


# -- 1: a stale checkpoint is never resumed across parameters --------------------------------------------------

def test_a_checkpoint_of_other_parameters_is_refused_naming_both(tmp_path):
    _unfinished_run(tmp_path / "arm", seed=0)
    with pytest.raises(ParameterError, match=r"belongs to an unfinished run with seed=0; this run has seed=1"):
        check_resumable(tmp_path / "arm", {"profile": "smoke", "seed": 1, "unfreeze_ratio": 0.3125})
    # the same parameters resume; bookkeeping (where, how often to checkpoint) does not count
    assert check_resumable(tmp_path / "arm", {"profile": "smoke", "seed": 0, "unfreeze_ratio": 0.3125,
                                              "output_dir": "elsewhere", "checkpoint_every": 5}) is not None


def test_a_checkpoint_without_its_run_json_is_refused(tmp_path):
    (tmp_path / "arm").mkdir()
    (tmp_path / "arm" / "checkpoint_stage1.pt").write_bytes(b"x")
    with pytest.raises(ParameterError, match="no readable run.json, so nothing says which run the checkpoint belongs to"):
        check_resumable(tmp_path / "arm", {"seed": 0})


def test_a_checkpoint_of_other_code_is_refused(tmp_path, monkeypatch):
    _unfinished_run(tmp_path / "arm")
    record = json.loads((tmp_path / "arm" / "run.json").read_text())
    record["run_info"]["git"]["commit"] = "0" * 40
    (tmp_path / "arm" / "run.json").write_text(json.dumps(record))
    monkeypatch.setattr("medlib.runs.git_state", lambda: {"commit": "1" * 40, "dirty": False})
    with pytest.raises(ParameterError, match="written by code at commit 0000000000; this code is at 1111111111"):
        check_resumable(tmp_path / "arm", {"profile": "smoke", "seed": 0, "unfreeze_ratio": 0.3125})


def _smoke_arm(**overrides) -> dict:
    """Every parameter of a smoke MedBLIP arm, as its run.json records them."""
    from medlib.experiments import get
    from medlib.orchestrate import check_arm

    return get("medblip").resolved(check_arm("medblip", {"profile": "smoke", **overrides}, "test"))


def test_the_cli_refuses_the_stale_checkpoint_before_a_kernel_starts(tmp_path, capsys):
    out = tmp_path / "arm"
    _unfinished_run(out, **_smoke_arm(seed=0))
    assert main(["run", "medblip", "--profile", "smoke", "-p", "seed", "1", "--output-dir", str(out)]) == 2
    assert "seed=0; this run has seed=1" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "checkpoint.pt", "run.json"]  # nothing written


def test_a_training_checkpoint_of_another_config_is_refused(tmp_path):
    import torch

    from medlib.train import TrainConfig, train

    model = torch.nn.Linear(2, 1)
    samples = [torch.randn(2) for _ in range(8)]

    def loss(m, batch):
        return m(batch).pow(2).mean()

    ckpt = tmp_path / "checkpoint.pt"
    train(model, samples, torch.stack, loss, TrainConfig(batch_size=2, seed=0, checkpoint_every=1), checkpoint_path=ckpt,
          stop_after_steps=2)
    with pytest.raises(ValueError, match="written by training with seed=0; this training has seed=1"):
        train(model, samples, torch.stack, loss, TrainConfig(batch_size=2, seed=1, checkpoint_every=1), checkpoint_path=ckpt)


def test_force_removes_everything_of_the_old_run_but_the_lock(tmp_path):
    out = tmp_path / "arm"
    _unfinished_run(out)
    (out / "metrics.csv").write_text("stale")
    (out / "sub").mkdir()
    (out / "sub" / "x.png").write_bytes(b"x")
    with RunFolderLock(out):
        clear_run_folder(out)
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]


@pytest.mark.slow
def test_force_runs_fresh_where_a_stale_checkpoint_lay(tmp_path, capsys):
    out = tmp_path / "arm"
    _unfinished_run(out, **_smoke_arm(seed=0))  # its checkpoint is not even a readable one: loading it would fail the run
    assert main(["run", "medblip", "--profile", "smoke", "-p", "seed", "1", "--output-dir", str(out), "--force"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["train_info"]["status"] == "finished" and record["run_info"]["seed"] == 1
    assert not list(out.glob("checkpoint*.pt"))


# -- 2: one run writes a folder at a time ----------------------------------------------------------------------

def _hold_lock(folder: Path) -> subprocess.Popen:
    code = ("import sys, time; from medlib.runs import RunFolderLock; RunFolderLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_into_a_locked_folder_is_refused_at_once_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "arm"
    holder = _hold_lock(out)
    try:
        with pytest.raises(RunFolderBusy, match=rf"another run \(pid {holder.pid}\) is writing this folder"):
            RunFolderLock(out).acquire()
        started = time.time()
        assert main(["run", "medblip", "--profile", "smoke", "--output-dir", str(out)]) == 2
        assert time.time() - started < 10 and f"pid {holder.pid}" in capsys.readouterr().err
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    RunFolderLock(out).acquire().release()  # the OS released the dead holder's lock


def test_a_kernel_may_hold_the_folder_its_parent_locked_for_it(tmp_path):
    out = tmp_path / "arm"
    with RunFolderLock(out):
        code = ("import sys; from medlib.runs import RunFolderLock; "
                "RunFolderLock(sys.argv[1], allow_parent=True).acquire(); RunFolderLock(sys.argv[1]).acquire()")
        done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=REPO_ROOT)
    # allowed with allow_parent (the first call), refused without it (the second)
    assert done.returncode == 1 and "RunFolderBusy" in done.stderr and f"pid {os.getpid()}" in done.stderr


# -- 3: Ctrl-C and SIGTERM stop a sweep within seconds -----------------------------------------------------------

def _kernels() -> set[int]:
    found = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if b"ipykernel_launcher" in (d / "cmdline").read_bytes():
                    found.add(int(d.name))
            except OSError:
                pass
    return found


def _parent(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_every_running_arm_marks_it_interrupted_and_exits_130(tmp_path, sig):
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "medlib", "sweep", "medblip", "--profile", "smoke", "--grid", "seed=0,1", "--results",
           str(results), "-p", "num_epochs", "40", "-p", "patience", "0", "-p", "checkpoint_every", "2"]  # no early stop
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    arms = [results / "medblip" / "smoke" / name for name in ("num_epochs=40,patience=0", "num_epochs=40,patience=0,seed=1")]
    deadline = time.time() + 240
    while not all((a / "checkpoint.pt").exists() for a in arms):  # both arms are training
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timed out"
        time.sleep(0.5)
    mine = {pid for pid in _kernels() if _parent(pid) == proc.pid}  # this sweep's kernels
    assert mine
    sent = time.time()
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 130
    assert time.time() - sent < 15
    for a in arms:
        record = json.loads((a / "run.json").read_text())
        assert record["train_info"]["status"] == "interrupted"
        assert (a / "checkpoint.pt").exists()  # kept for the same command to resume
    assert "interrupted" in proc.stderr.read()
    time.sleep(1)
    assert not (mine & _kernels()), "a kernel outlived the sweep"


# -- 5: an arm runs as an arm always does, whatever a zoo build set before it ------------------------------------

def test_every_zoo_builder_gives_back_the_threads_and_random_state_it_found():
    from medlib.zoo.adaptation import build_adaptation_zoo
    from medlib.zoo.clinicalblip import build_clinicalblip_zoo
    from medlib.zoo.medblip import build_medblip_zoo
    from medlib.zoo.minigpt_med import build_minigpt_zoo

    for build in (build_medblip_zoo, build_minigpt_zoo, build_clinicalblip_zoo, build_adaptation_zoo):
        assert hasattr(build, "__wrapped__"), f"{build.__name__} does not keep the process state"


def _short_arm() -> list[float]:
    """A few optimizer steps of a freshly initialised layer: its losses, which the random state it starts from
    changes, and the thread count it ran with."""
    import torch

    model = torch.nn.Linear(64, 64)  # initialised from torch's global random state, as an arm's new layers are
    x = torch.randn(256, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses + [float(torch.get_num_threads())]


def _smoke_arm_start() -> tuple:
    """What an arm starts from, as `experiments.start` and the notebook's `load_model` make it: the smoke MedBLIP
    model's freshly drawn weights, the thread count, and a few steps of a layer initialised after it."""
    from medlib.experiments import medblip as exp
    from medlib.paths import weights_fingerprint
    from medlib.seeding import pin_threads, seed_everything

    seed_everything(0)
    pin_threads(1)
    model, _, _ = exp.load_model("smoke", 0.3125, False)
    return weights_fingerprint(model), _short_arm()


def test_an_arm_after_an_in_process_zoo_stage_runs_as_the_arm_alone(monkeypatch, tmp_path):
    """A real zoo build in the arm's process (MedBLIP's builder, one epoch a stage on the smoke data), then the arm:
    the same start as the arm run alone."""
    import torch

    import medlib.zoo.medblip as zm
    from medlib.data.synthcxr import build
    from medlib.zoo import local_builds

    alone = _smoke_arm_start()
    for name in ("VISION_EPOCHS", "LM_EPOCHS", "ALIGN_EPOCHS"):
        monkeypatch.setattr(zm, name, 1)
    monkeypatch.setattr(zm, "VISION_RENDERS", 1)
    monkeypatch.setattr(zm, "build", lambda **kw: build(**{**kw, "limit": 160}))
    monkeypatch.setenv("MEDLIB_CACHE", str(tmp_path))
    with local_builds():
        root = zm.build_medblip_zoo(progress=False)
    assert (root / "zoo.json").exists() and torch.get_num_threads() == 1
    assert _smoke_arm_start() == alone


# -- 4: the labeller's reference labels are rescored where they changed ------------------------------------------

def test_relabelling_rewrites_an_items_file_only_where_a_label_changed(tmp_path):
    import pandas as pd

    from medlib.experiments.clinicalblip import label_strings
    from medlib.metrics.clinical import label_matrix
    from medlib.metrics.report_generation import relabel_references

    refs = ["the heart is not enlarged .", "the lungs are clear ."]
    stale = label_strings(label_matrix(refs))
    stale[0] = "00100000000000"  # what the labeller said before: Cardiomegaly positive
    items = pd.DataFrame({"split": ["test", "test"], "id": ["a", "b"], "reference": refs, "reference_labels": stale})
    path = tmp_path / "evaluation_items.csv.gz"
    items.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})
    assert relabel_references(path) == ["test:a"]
    again = path.read_bytes()
    assert relabel_references(path) == [] and path.read_bytes() == again


# -- 6: the smaller items ----------------------------------------------------------------------------------------

def test_an_empty_generation_scores_zero_on_every_coco_metric():
    from medlib.metrics.text import coco_scores

    out = coco_scores(["", "the heart is normal ."], ["the lungs are clear .", "the heart is normal ."])
    for metric, per in out["per_sample"].items():
        assert per[0] < 1e-9, (metric, per[0])


def test_a_utf16_annotation_json_is_refused_naming_the_file(tmp_path):
    from medlib.data.loaders import r2gen_annotation

    ann = tmp_path / "annotation.json"
    ann.write_bytes(json.dumps({"train": [], "val": [], "test": []}).encode("utf-16"))
    with pytest.raises(ValueError, match=r"annotation.json: the file is UTF-16 \(LE\); save it as UTF-8"):
        r2gen_annotation(ann, tmp_path, "train")


@pytest.mark.parametrize("encoding,says", [("utf-16-le", "UTF-16 (LE)"), ("utf-16-be", "UTF-16 (BE)")])
def test_a_utf16_csv_without_a_bom_is_named_not_read_as_missing_columns(tmp_path, encoding, says):
    from medlib.data.loaders import medical_diff_vqa

    csv = tmp_path / "mimic_vqa.csv"
    csv.write_bytes("study_id,subject_id,question_type,question,answer,dicom_id\n1,2,abnormality,q,a,d\n".encode(encoding))
    with pytest.raises(ValueError, match=rf"mimic_vqa.csv: the file looks like {says.replace('(', '[(]').replace(')', '[)]')} "
                                         "without a byte-order mark"):
        medical_diff_vqa(csv, tmp_path)


def test_a_corrupt_image_is_found_by_its_header_before_the_model_loads(tmp_path):
    from PIL import Image

    from medlib.data.loaders import check_images

    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:40])  # a truncated download
    check_images([good], "annotation.json")
    with pytest.raises(ValueError, match=r"annotation.json: 1 image\(s\) cannot be read: .*bad.png"):
        check_images([good, bad, good], "annotation.json")


def test_the_clinicalblip_paper_path_checks_its_images_before_the_model(tmp_path, monkeypatch):
    from PIL import Image

    from medlib.experiments import clinicalblip

    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img" / "ok.png")
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    entry = {"id": "a", "report": "The heart is normal.", "image_path": ["ok.png"]}
    ann = tmp_path / "annotation.json"
    ann.write_text(json.dumps({"train": [entry], "val": [entry], "test": [{**entry, "image_path": ["broken.png"]}]}))
    monkeypatch.setattr("medlib.resources.check_paper_resources", lambda *a, **k: None)
    with pytest.raises(ValueError, match="broken.png"):
        clinicalblip.load_data("paper", "iu_xray", str(ann), str(tmp_path / "img"))


@pytest.mark.parametrize("modality,says", [("US", "an ultrasound image"), ("OT", "an image of another, unspecified kind"),
                                           ("NM", "a nuclear-medicine image")])
def test_other_modalities_are_refused_as_what_they_are(tmp_path, modality, says):
    from medlib.data.dicom import read_dicom, write_dicom

    path = write_dicom(tmp_path / f"{modality}.dcm", np.zeros((8, 8), np.uint16), modality=modality)
    with pytest.raises(ValueError, match=rf"Modality {modality} \({says}\)") as err:
        read_dicom(path)
    assert "cross-sectional" not in str(err.value)


@pytest.mark.slow
def test_a_run_prints_no_unencrypted_tcp_warning(tmp_path, capfd):
    assert main(["run", "data_tour", "--profile", "smoke", "--output-dir", str(tmp_path / "tour"), "--log"]) == 0
    out, err = capfd.readouterr()
    assert "without encryption" not in out + err


def test_smoke_runs_under_results_are_ignored_by_git():
    path = "results/medblip/smoke/default/run.json"
    assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO_ROOT).returncode == 0


def test_run_json_records_where_it_ran_relative_to_the_checkout(tmp_path):
    from medlib.runs import Run

    inside = REPO_ROOT / "my_runs" / "test_relative" / str(os.getpid())
    try:
        run = Run("medblip", {"profile": "smoke", "output_dir": str(inside)}, inside)
        recorded = json.loads((inside / "run.json").read_text())["run_info"]["parameters"]["output_dir"]
        assert recorded == f"my_runs/test_relative/{os.getpid()}" and run.output_dir == inside
    finally:
        clear_run_folder(inside)
        inside.rmdir()
    outside = Run("medblip", {"profile": "smoke", "output_dir": str(tmp_path)}, tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["run_info"]["parameters"]["output_dir"] == str(tmp_path)
    assert outside.status == "running"


def test_no_committed_run_json_records_a_path_of_someone_s_disk():
    absolute = [str(p) for p in (REPO_ROOT / "results").rglob("run.json")
                if Path(json.loads(p.read_text())["run_info"]["parameters"].get("output_dir", "")).is_absolute()]
    assert not absolute, absolute[:3]


def test_tables_and_figures_do_not_change_for_numbers_that_differ_in_the_15th_digit(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from medlib.tables import write_figure, write_table

    a = pd.DataFrame({"arm": ["x", "y"], "lo": [0.1284539858086418, 0.04509442954815592]})
    b = a.assign(lo=a.lo + 3e-17)
    write_table(tmp_path, "claims", a, "# claims")
    first = (tmp_path / "claims.csv").read_bytes()
    write_table(tmp_path, "claims", b, "# claims")
    assert (tmp_path / "claims.csv").read_bytes() == first

    def draw(frame):
        fig, ax = plt.subplots()
        ax.plot(frame.lo)
        ax.set(title="Lower bound per arm", xlabel="Arm", ylabel="Lower bound")
        return fig

    assert write_figure(draw(a), tmp_path / "f.png", a)
    assert not write_figure(draw(b), tmp_path / "f.png", b)  # the same numbers at the tables' precision: left as is
    assert write_figure(draw(a.assign(lo=a.lo + 0.01)), tmp_path / "f.png", a.assign(lo=a.lo + 0.01))
    plt.close("all")

