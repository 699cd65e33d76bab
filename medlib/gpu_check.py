"""The paper path on a GPU, with nothing downloaded: each notebook on the paper profile with
`checkpoint="random"` (the paper's architecture at full size, random weights), reading small data sets
written in the real formats (Medical-Diff-VQA CSV + MIMIC-CXR-JPG folders, R2Gen `annotation.json` +
PNGs, RSNA's label CSV with real rows + 1024 px DICOMs), sized so that training takes two optimizer
steps (per stage for ClinicalBLIP) before a generation. It checks memory, dtypes and shapes of the real
configurations through the notebooks' own code; its numbers mean nothing (random weights).

    python -m medlib gpu-check            # writes results/gpu_check/{summary.json,summary.md} and the runs
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np

from medlib import fileio
from medlib.data import rsna
from medlib.data.dicom import write_dicom
from medlib.data.sources import RSNA_LABELS, xrv_file
from medlib.data.splits import hash_split
from medlib.data.synthcxr import build, vqa_pairs
from medlib.experiments.medblip import PAPER_SPLIT, QUESTION_TYPES
from medlib.orchestrate import run_arm
from medlib.runs import REPO_ROOT, to_markdown

STEPS = 2
BATCH = 4


def _synth():

    return build(image_size=128, progress=False)


def _upsample(img: np.ndarray, side: int) -> np.ndarray:
    # imported here: only where images are decoded or written
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR))


def write_medblip_fixture(root: Path) -> dict:
    """Medical-Diff-VQA rows of SynthCXR-IU studies (two optimizer steps of training pairs, one test
    study), their images as MIMIC-CXR-JPG files."""

    # imported here: only where images are decoded or written
    from PIL import Image

    ds = _synth()
    labels = sorted({lab for s in ds.studies for lab in s.labels})
    rng = np.random.default_rng(0)
    rows, need = [], {"train": STEPS * BATCH, "test": BATCH}
    for k, s in enumerate(ds.studies):
        study = f"5{k:07d}"
        side = hash_split(f"medblip:{study}", PAPER_SPLIT)
        if need.get(side, 0) <= 0:
            continue
        subject = f"1{k:07d}"
        folder = root / "mimic-cxr-jpg" / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_upsample(ds.images[s.index], 256)).save(folder / f"d{k}.jpg")
        for q in [q for q in vqa_pairs(s, labels, rng) if q["question_type"] in QUESTION_TYPES][:need[side]]:
            rows.append({"study_id": study, "subject_id": subject, "question_type": q["question_type"],
                         "question": q["question"], "answer": q["answer"], "dicom_id": f"d{k}"})
            need[side] -= 1
        if all(v <= 0 for v in need.values()):
            break
    path = root / "mimic_pair_questions.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return {"diff_vqa_csv": str(path), "mimic_jpg_root": str(root / "mimic-cxr-jpg"), "augment": False,
            "batch_size": BATCH, "num_epochs": 1}


def write_clinicalblip_fixture(root: Path) -> dict:
    """R2Gen's `annotation.json` for SynthCXR-IU studies (real IU X-Ray reports), two optimizer steps of
    training reports, and their images as PNGs."""
    # imported here: only where images are decoded or written
    from PIL import Image

    ds = _synth()
    entries = {"train": [], "val": [], "test": []}
    studies = [s for s in ds.studies if s.report_clean]
    for split, chosen in (("train", studies[:STEPS * BATCH]), ("test", studies[STEPS * BATCH:STEPS * BATCH + 2])):
        for s in chosen:
            (root / "images" / s.uid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_upsample(ds.images[s.index], 256)).save(root / "images" / s.uid / "0.png")
            entries[split].append({"id": s.uid, "report": s.report, "image_path": [f"{s.uid}/0.png"], "split": split})
    fileio.write_json(root / "annotation.json", entries)
    return {"annotation": str(root / "annotation.json"), "image_root": str(root / "images"), "batch_size": BATCH,
            "epochs_stage1": 1, "epochs_stage2": 1, "epochs_joint": 1, "max_new_tokens": 40}


def write_rsna_fixture(root: Path) -> dict:
    """Real RSNA label rows (the CSV in torchxrayvision) of positive patients — two optimizer steps of
    grounding samples and one test patient — with SynthCXR-IU images as their 1024 px DICOMs."""
    # imported here: heavy: tables only
    import pandas as pd

    with zipfile.ZipFile(xrv_file(RSNA_LABELS)) as z:
        df = pd.read_csv(z.open(z.namelist()[0]))
    tasks = ["detection", "refer", "identify"]
    want = {"train": 2, "test": 1}  # 2 patients x 3 tasks = 6 samples: two steps of 3
    chosen = []
    for pid in df[df.Target == 1].patientId.unique():
        side = rsna.hash_split(f"rsna:{pid}", rsna.SPLIT)
        if want.get(side, 0) > 0:
            chosen.append(pid)
            want[side] -= 1
        if not any(want.values()):
            break
    rows = df[df.patientId.isin(chosen)]
    (root / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
    rows.to_csv(root / "stage_2_train_labels.csv", index=False)
    ds = _synth()
    for k, pid in enumerate(chosen):
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", _upsample(ds.images[k], rsna.SIDE), bits=8)
    return {"rsna_labels_csv": str(root / "stage_2_train_labels.csv"), "rsna_image_dir": str(root / "stage_2_train_images"),
            "tasks": tasks, "batch_size": 3, "num_epochs": 1}


CHECKS = {
    "medblip": (write_medblip_fixture, {"checkpoint": "random", "unfreeze_ratio": 0.3125, "max_new_tokens": 4}),
    "clinicalblip": (write_clinicalblip_fixture, {"checkpoint": "random", "stages": "stage1+2"}),
    "minigpt_med": (write_rsna_fixture, {"llm_checkpoint": "random", "max_new_tokens": 16}),
}


def train_steps(train_info: dict) -> str:
    """Optimizer steps a run took, per stage where it had stages (ClinicalBLIP)."""
    if "stages" in train_info:
        return " + ".join(f"{len(st['loss_curve'])} ({st['stage']})" for st in train_info["stages"])
    return str(len(train_info.get("loss_curve") or []))


def run(out: Path = REPO_ROOT / "results" / "gpu_check", only: list[str] | None = None) -> dict:
    """Each check: write its data, run its notebook on the paper profile with random weights, record
    the outcome (finished or the error), duration, device and peak GPU memory."""

    # imported here: keeps this module importable without torch (medlib list)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (write, params) in CHECKS.items():
            if only and name not in only:
                continue
            started = time.time()
            try:
                data = write(Path(tmp) / name)
                arm, _ = run_arm(name, {"profile": "paper", **params, **data}, output_dir=out / name, force=True)
                rec = json.loads((arm / "run.json").read_text())
                rows.append({"experiment": name, "status": "finished", "seconds": round(time.time() - started, 1),
                             "train_steps": train_steps(rec["train_info"]),
                             "gpu_peak_gib": rec["meta_info"]["device"].get("gpu_peak_gib"),
                             "trainable_params": rec["train_info"].get("trainable_params"),
                             "total_params": rec["train_info"].get("total_params")})
            except Exception as err:  # record the failure and go on to the next check
                rows.append({"experiment": name, "status": "failed", "seconds": round(time.time() - started, 1),
                             "error": "".join(traceback.format_exception_only(err)).strip()[-2000:]})
    summary = {"device": device, "torch": torch.__version__, "checks": rows}
    fileio.write_json(out / "summary.json", summary)
    # imported here: heavy: tables only
    import pandas as pd

    fileio.write_text(out / "summary.md", f"Paper architectures at full size with random weights on {device or 'no GPU'} "
                      f"(`python -m medlib gpu-check`): {STEPS} training steps (per stage) and a generation through each "
                      "notebook on data written in the real formats. Numbers other than memory and time mean nothing "
                      "(random weights).\n\n" + to_markdown(pd.DataFrame(rows)) + "\n")
    return summary
