"""One run = one ablation arm: its folder, its manifest JSON, its tables and figures.

A notebook opens a run right after its parameters cell (`medlib.experiments.start`, which checks the
parameters first) and closes it at the end:

    run = medlib.experiments.start("medblip", globals())
    ...
    run.finish(metrics=..., trainable_params=..., total_params=...)

`run.json` has peft's method-comparison shape: `run_info` (what was run), `train_info`
(what came out) and `meta_info` (where). It is written atomically; its `status` is
"running" from the start and "finished" only after every table and figure is in place,
so a killed run is never mistaken for a finished one.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from medlib import fileio
from medlib.paths import REPO_ROOT
from medlib.seeding import cpu_dispatch

RUN_FILE = "run.json"


def git_state(root: Path = REPO_ROOT) -> dict:
    """The commit and whether the code had uncommitted changes; None where there is no git. Files
    under results/ do not count: they are what runs write (a reproduction rewrites them as it
    goes), never what computes the numbers."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"], cwd=root,
                                capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict:

    out = {"python": platform.python_version()}
    for name in ("medlib", "torch", "transformers", "peft", "accelerate", "timm", "tokenizers", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict:
    # imported here: keeps this module importable without torch (medlib list)
    import torch

    info = {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "cpu_dispatch": cpu_dispatch()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)  # this process so far
    return info


def cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), beside the pinned dispatch: two machines whose zoo builds
    or runs differ bit for bit are told apart by it first."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def read_run(run_dir: str | Path) -> dict | None:
    """The run JSON of a folder, or None when absent or unreadable (a torn write counts as absent)."""
    path = Path(run_dir) / RUN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def load_arms(run_dirs) -> list[dict]:
    """The finished arms an aggregator reads: {dir, params, train (train_info), duration_s} per folder."""
    arms = []
    for d in run_dirs:
        rec = json.loads((Path(d) / RUN_FILE).read_text())
        arms.append({"dir": Path(d), "params": rec["run_info"]["parameters"], "train": rec["train_info"],
                     "duration_s": rec["run_info"]["duration_s"], "fingerprint": rec["run_info"].get("data_fingerprint")})
    return arms


def scored_arms(run_dirs, experiment: str) -> tuple[list[dict], object]:
    """The finished arms that kept per-item scores (`per_sample.csv.gz`) and the evaluation items they all
    answer (`evaluation_items.csv.gz`, kept in git beside one arm only), every arm's data fingerprint checked
    against that arm's: what an experiment's aggregation pairs its arms on. Returns (arms, items frame)."""
    # imported here: heavy: tables only
    import pandas as pd

    arms = [a for a in load_arms(run_dirs) if (a["dir"] / "per_sample.csv.gz").exists()]
    if not arms:
        raise ValueError(f"no finished {experiment} arm with per-item scores (per_sample.csv.gz); re-run the arms with this medlib")
    with_items = [a for a in arms if (a["dir"] / "evaluation_items.csv.gz").exists()]
    if not with_items:
        raise ValueError(f"{arms[0]['dir'].parent}: no arm holds evaluation_items.csv.gz; re-run the default arm")
    items = pd.read_csv(with_items[0]["dir"] / "evaluation_items.csv.gz", keep_default_na=False)
    for a in arms:
        if a["fingerprint"] != with_items[0]["fingerprint"]:
            raise ValueError(f"{a['dir']}: data fingerprint {a['fingerprint']} differs from {with_items[0]['dir']}'s "
                             f"{with_items[0]['fingerprint']}: arms of different data cannot be compared; re-run it")
    return arms, items


def is_finished(run_dir: str | Path, parameters: dict | None = None, normalise=None) -> bool:
    """Whether `run_dir` holds a finished run (of `parameters`, when given). `normalise` maps both the
    recorded and the asked parameters to what the run trains with (an experiment's profile defaults),
    so a run that recorded `lr: 0` ("the profile's") and one that recorded the value itself compare."""
    record = read_run(run_dir)
    if not record or record.get("train_info", {}).get("status") != "finished":
        return False
    if parameters is None:
        return True
    norm = normalise or (lambda p: p)
    return _comparable(norm(record["run_info"]["parameters"])) == _comparable(norm(parameters))


# Parameters that change how a run is carried out, never its numbers: where the results land and how
# often a resumable checkpoint is written.
BOOKKEEPING = ("output_dir", "checkpoint_every", "overwrite")


def _comparable(parameters: dict) -> dict:
    return {k: v for k, v in parameters.items() if k not in BOOKKEEPING}


def main_process() -> bool:
    """False in the other processes of an `accelerate launch` / torchrun job: every process runs the
    notebook (and trains its part of each batch), only the first writes results."""
    return int(os.environ.get("RANK", "0")) == 0


class Run:
    def __init__(self, experiment: str, parameters: dict, output_dir: Path):
        self.experiment = experiment
        self.parameters = parameters
        self.output_dir = output_dir
        self.started = time.time()
        self.start_time = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.data_fingerprint: str | None = None
        self.weights_fingerprint: str | None = None  # the weights the arm started from (the zoo's, for tiny)
        self.artifacts: list[str] = []
        self.status = "running"
        self._write("running", {})

    def record_weights(self, model) -> None:
        """Fingerprint the weights the arm starts from, before training: two arms with the same data
        and parameters but another zoo build differ here, and nowhere else in run.json."""
        # imported here: keeps this module importable without torch (medlib list)
        from medlib.paths import weights_fingerprint

        self.weights_fingerprint = weights_fingerprint(model)
        self._write(self.status, {})

    # -- outputs -------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.output_dir / name

    def save_table(self, df, name: str, index: bool = False, floatfmt: str = ".4f") -> Path:
        """Write `name.csv` and `name.md`; returns the CSV path."""
        if not main_process():
            return self.path(f"{name}.csv")
        csv = fileio.write_text(self.path(f"{name}.csv"), df.to_csv(index=index))
        fileio.write_text(self.path(f"{name}.md"), to_markdown(df, index=index, floatfmt=floatfmt))
        self.artifacts += [f"{name}.csv", f"{name}.md"]
        return csv

    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        if not main_process():
            return self.path(f"{name}.png")
        out = fileio.write_with(self.path(f"{name}.png"), lambda p: fig.savefig(p, format="png", dpi=dpi, bbox_inches="tight"))
        self.artifacts.append(f"{name}.png")
        return out

    def save_rows(self, df, name: str) -> Path:
        """A per-sample table as gzip-compressed CSV (`name.csv.gz`): thousands of rows an aggregation
        reads back, too long to keep as text beside every arm."""
        self.artifacts.append(f"{name}.csv.gz")
        if not main_process():
            return self.path(f"{name}.csv.gz")
        # mtime=0: the same rows give the same bytes, so a re-run changes nothing in git
        return fileio.write_with(self.path(f"{name}.csv.gz"), lambda p: df.to_csv(p, index=False, compression={"method": "gzip", "mtime": 0}))

    def save_json(self, obj, name: str) -> Path:
        self.artifacts.append(f"{name}.json")
        if not main_process():
            return self.path(f"{name}.json")
        return fileio.write_json(self.path(f"{name}.json"), obj)

    # -- manifest ------------------------------------------------------------------------
    def finish(self, metrics: dict, **train_info) -> dict:
        """Record the outcome; `train_info` takes trainable_params, total_params, loss_curve, ..."""
        return self._write("finished", {"metrics": metrics, **train_info})

    def fail(self, error: str) -> dict:
        return self._write("failed", {"error": error})

    def _write(self, status: str, train_info: dict) -> dict:
        self.status = status
        record = {
            "run_info": {
                "experiment": self.experiment,
                "parameters": self.parameters,
                "profile": self.parameters.get("profile"),
                "seed": self.parameters.get("seed"),
                "start_time": self.start_time,
                "duration_s": round(time.time() - self.started, 2),
                "git": git_state(),
                "data_fingerprint": self.data_fingerprint,
                "weights_fingerprint": self.weights_fingerprint,
            },
            "train_info": {"status": status, **train_info},
            "meta_info": {"versions": package_versions(), "device": device_info()},
            "artifacts": sorted(set(self.artifacts)),
        }
        if "WORLD_SIZE" in os.environ:
            record["run_info"]["processes"] = int(os.environ["WORLD_SIZE"])
        if main_process():
            fileio.write_json(self.path(RUN_FILE), record)
        return record


def mark_failed(run_dir: str | Path, error: str) -> bool:
    """Turn a run left at "running" into "failed" with `error` (what a kernel that died could not
    do itself); a finished or already failed run is left alone. Returns whether it wrote."""
    record = read_run(run_dir)
    if not record or record.get("train_info", {}).get("status") != "running":
        return False
    record["train_info"] = {**record["train_info"], "status": "failed", "error": error}
    fileio.write_json(Path(run_dir) / RUN_FILE, record)
    return True


def mark_failures_in_kernel(run: Run) -> None:
    """In a Jupyter kernel, any cell that raises from here on marks the run failed before the
    traceback is shown (papermill still stops on it)."""
    try:
        # imported here: only in a Jupyter kernel
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def on_error(self, etype, value, tb, tb_offset=None):
        if run.status == "running":
            run.fail(f"{etype.__name__}: {value}")
        return self.showtraceback((etype, value, tb), tb_offset=tb_offset)

    shell.set_custom_exc((Exception, KeyboardInterrupt), on_error)


def to_markdown(df, index: bool = False, floatfmt: str = ".4f") -> str:
    """A GitHub table without the optional `tabulate` dependency."""
    frame = df.reset_index() if index else df
    cols = [str(c) for c in frame.columns]

    def fmt(v):
        if isinstance(v, float):
            return "" if v != v else format(v, floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"
