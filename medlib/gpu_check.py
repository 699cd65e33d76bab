"""The paper path on a GPU, with nothing downloaded: each notebook on the paper profile with
`checkpoint="random"` (the paper's architecture at full size, random weights), reading small data sets
written in the real formats (Medical-Diff-VQA CSV + MIMIC-CXR-JPG folders, R2Gen `annotation.json` +
PNGs, RSNA's label CSV with real rows + 1024 px DICOMs), sized so that training takes two optimizer
steps (per stage for ClinicalBLIP) before a generation. It checks memory, dtypes and shapes of the real
configurations through the notebooks' own code; its numbers mean nothing (random weights).

    python -m medlib gpu-check            # writes results/gpu_check/{summary.json,summary.md} and the runs
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
from pathlib import Path

import pandas as pd
import torch

from medlib import fileio
from medlib.experiments import fixtures
from medlib.orchestrate import run_arm
from medlib.paths import REPO_ROOT
from medlib.tables import to_markdown

STEPS = 2
BATCH = 4


# Each experiment's paper-format data (`medlib.experiments.fixtures`) and what its check sets beside it.
CHECKS = {
    "medblip": (fixtures.medblip, {"checkpoint": "random", "unfreeze_ratio": 0.3125, "max_new_tokens": 4}),
    "clinicalblip": (fixtures.clinicalblip, {"checkpoint": "random", "stages": "stage1+2"}),
    "minigpt_med": (fixtures.minigpt_med, {"llm_checkpoint": "random", "max_new_tokens": 16}),
}


def train_steps(train_info: dict) -> str:
    """Optimizer steps a run took, per stage where it had stages (ClinicalBLIP)."""
    if "stages" in train_info:
        return " + ".join(f"{len(st['loss_curve'])} ({st['stage']})" for st in train_info["stages"])
    return str(len(train_info.get("loss_curve") or []))


def run(out: Path = REPO_ROOT / "results" / "gpu_check", only: list[str] | None = None) -> dict:
    """Each check: write its data, run its notebook on the paper profile with random weights, record
    the outcome (finished or the error), duration, device and peak GPU memory."""

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (write, params) in CHECKS.items():
            if only and name not in only:
                continue
            started = time.time()
            try:
                data = write(Path(tmp) / name, STEPS, BATCH)
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
    fileio.write_text(out / "summary.md", f"Paper architectures at full size with random weights on {device or 'no GPU'} "
                      f"(`python -m medlib gpu-check`): {STEPS} training steps (per stage) and a generation through each "
                      "notebook on data written in the real formats. Numbers other than memory and time mean nothing "
                      "(random weights).\n\n" + to_markdown(pd.DataFrame(rows)) + "\n")
    return summary
