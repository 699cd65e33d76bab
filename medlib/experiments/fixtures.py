"""Small data sets in the real formats the paper profile's loaders read, made from SynthCXR-IU images and sized for a
few optimizer steps: what `medlib gpu-check` and the paper-path tests run on (each returns the notebook parameters
that point at it)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medlib import fileio
from medlib.data import rsna
from medlib.data.dicom import write_dicom
from medlib.data.sources import RSNA_LABELS, xrv_file
from medlib.data.splits import hash_split
from medlib.data.synthcxr import build, vqa_pairs
from medlib.experiments.medblip import PAPER_SPLIT
from medlib.metrics.vqa import QUESTION_TYPES


def images():
    """SynthCXR-IU at 128 px: the images the paper-format fixtures (this module's functions,
    what `medlib gpu-check` and the paper-path tests read) are made from."""
    return build(image_size=128, progress=False)


def upsample(img: np.ndarray, side: int) -> np.ndarray:
    """A fixture image at the side the real data set's files have."""
    return np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR))


def medblip(root: Path, steps: int = 2, batch: int = 4) -> dict:
    """Medical-Diff-VQA rows of SynthCXR-IU studies (two optimizer steps of training pairs, a batch of validation
    pairs, two test studies), their images as MIMIC-CXR-JPG files."""

    ds = images()
    labels = sorted({lab for s in ds.studies for lab in s.labels})
    rng = np.random.default_rng(0)
    rows, need = [], {"train": steps * batch, "val": batch, "test": batch}  # validation: what a run outside results/ reports
    for k, s in enumerate(ds.studies):
        study = f"5{k:07d}"
        side = hash_split(f"medblip:{study}", PAPER_SPLIT)
        if need.get(side, 0) <= 0:
            continue
        subject = f"1{k:07d}"
        folder = root / "mimic-cxr-jpg" / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(upsample(ds.images[s.index], 256)).save(folder / f"d{k}.jpg")
        # at most two test questions a study: the image-shuffled control needs two test studies
        for q in [q for q in vqa_pairs(s, labels, rng) if q["question_type"] in QUESTION_TYPES][:min(need[side], 2 if side == "test" else need[side])]:
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
            "batch_size": batch, "num_epochs": 1}


def clinicalblip(root: Path, steps: int = 2, batch: int = 4) -> dict:
    """R2Gen's `annotation.json` for SynthCXR-IU studies (real IU X-Ray reports), two optimizer steps of
    training reports, two validation and two test reports, and their images as PNGs."""
    ds = images()
    entries = {"train": [], "val": [], "test": []}
    studies = [s for s in ds.studies if s.report_clean]
    n = steps * batch
    for split, chosen in (("train", studies[:n]), ("val", studies[n:n + 2]), ("test", studies[n + 2:n + 4])):
        for s in chosen:
            (root / "images" / s.uid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(upsample(ds.images[s.index], 256)).save(root / "images" / s.uid / "0.png")
            entries[split].append({"id": s.uid, "report": s.report, "image_path": [f"{s.uid}/0.png"], "split": split})
    fileio.write_json(root / "annotation.json", entries)
    return {"annotation": str(root / "annotation.json"), "image_root": str(root / "images"), "batch_size": batch,
            "epochs": 2, "epochs_stage1": 1, "max_new_tokens": 40}


def minigpt_med(root: Path, steps: int = 2, batch: int = 4) -> dict:
    """Real RSNA label rows (the CSV in torchxrayvision) of positive patients — two optimizer steps of
    grounding samples, two validation and two test patients (the image-shuffled control needs two on the split a
    run reports) — with SynthCXR-IU images as their 1024 px DICOMs."""
    with zipfile.ZipFile(xrv_file(RSNA_LABELS)) as z:
        df = pd.read_csv(z.open(z.namelist()[0]))
    tasks = ["detection", "refer", "identify"]
    want = {"train": steps, "val": 2, "test": 2}  # a patient gives 3 samples (one per task): one step of 3 each
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
    ds = images()
    for k, pid in enumerate(chosen):
        write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", upsample(ds.images[k], rsna.SIDE), bits=8)
    return {"rsna_labels_csv": str(root / "stage_2_train_labels.csv"), "rsna_image_dir": str(root / "stage_2_train_images"),
            "tasks": tasks, "batch_size": 3, "num_epochs": 1}


WRITERS = {"medblip": medblip, "clinicalblip": clinicalblip, "minigpt_med": minigpt_med}
