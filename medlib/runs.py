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

import fcntl
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from medlib import fileio
from medlib.params import ParameterError
from medlib.paths import REPO_ROOT, weights_fingerprint
from medlib.provenance import device_info, git_state, package_versions
from medlib.tables import check_figure, table_csv, to_markdown

RUN_FILE = "run.json"
LOCK_FILE = ".run.lock"  # held (an OS file lock) by the one process writing the folder; git-ignored
# Statuses a run ends with. "interrupted": stopped by Ctrl-C or SIGTERM; its checkpoint is kept and the same
# parameters resume from it.
UNFINISHED = ("running", "failed", "interrupted")


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock."""


_HELD: dict = {}  # folder -> the lock this process holds on it


class RunFolderLock:
    """An exclusive lock on one run folder, held while one process writes it: a second run into the same folder
    is refused at once, naming the holder. The OS releases it when the holder dies, so a killed run never
    leaves a folder locked. `allow_parent`: the process that started this one (`medlib run` for its kernel)
    may hold it on our behalf."""

    def __init__(self, folder: str | Path, allow_parent: bool = False):
        self.folder, self.allow_parent, self._fd = Path(folder), allow_parent, None

    def acquire(self) -> RunFolderLock:
        key = self.folder.resolve()
        if key in _HELD:  # this process holds it already (a notebook's first cell run again)
            return _HELD[key]
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if self.allow_parent and holder == str(os.getppid()):
                return self
            raise RunFolderBusy(f"{self.folder}: another run (pid {holder or 'unknown'}) is writing this folder; "
                                "wait for it to end, or choose another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        _HELD[key] = self
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
            _HELD.pop(self.folder.resolve(), None)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def clear_run_folder(folder: str | Path) -> None:
    """Remove everything an earlier run left in its folder (run.json, checkpoints, tables, figures, the executed
    notebook) but the lock: what `--force` / `overwrite = True` mean. A run folder belongs to one run."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def checkpoints_in(folder: str | Path) -> list[Path]:
    """The resumable training checkpoints an unfinished run left (`checkpoint*.pt`)."""
    return sorted(Path(folder).glob("checkpoint*.pt")) if Path(folder).is_dir() else []


def check_resumable(folder: str | Path, parameters: dict, normalise=None) -> dict | None:
    """Before a run writes into `folder`: the checkpoints an unfinished run left there may be resumed only by
    the same run, the same parameters from the same code. Anything else is refused naming both, before any work
    starts. Returns the earlier run's record when its checkpoints will be resumed (its data and weights
    fingerprints are checked when the new run records its own), else None."""
    ckpts = checkpoints_in(folder)
    if not ckpts:
        return None
    names = ", ".join(p.name for p in ckpts)
    fix = "pass --force (notebook: overwrite = True) to remove the earlier run, or choose another output folder"
    previous = read_run(folder)
    if previous is None:
        raise ParameterError(f"{folder}: holds {names} but no readable {RUN_FILE}, so nothing says which run the "
                             f"checkpoint belongs to; {fix}")
    status = previous.get("train_info", {}).get("status")
    if status not in UNFINISHED:
        raise ParameterError(f"{folder}: holds {names} beside a {status} run; {fix}")
    norm = normalise or (lambda p: p)
    old, new = _comparable(norm(previous["run_info"]["parameters"])), _comparable(norm(parameters))
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if differ:
        raise ParameterError(f"{folder}: {names} belongs to an unfinished run with "
                             f"{', '.join(f'{k}={old.get(k)!r}' for k in differ)}; this run has "
                             f"{', '.join(f'{k}={new.get(k)!r}' for k in differ)}; {fix}")
    was, now = (previous["run_info"].get("git") or {}).get("commit"), git_state().get("commit")
    if was and now and was != now:
        raise ParameterError(f"{folder}: {names} was written by code at commit {was[:10]}; this code is at {now[:10]}; {fix}")
    return previous


def display_path(path: str | Path) -> str:
    """A path as run.json records it: relative to the checkout when inside it (the same in every clone),
    else as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def read_run(run_dir: str | Path) -> dict | None:
    """The run JSON of a folder, or None when absent or unreadable (a torn write counts as absent)."""
    path = Path(run_dir) / RUN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def load_arms(run_dirs) -> list[dict]:
    """The finished arms an aggregator reads: {dir, params, train (train_info), duration_s, fingerprint, git} per folder."""
    arms = []
    for d in run_dirs:
        rec = json.loads((Path(d) / RUN_FILE).read_text())
        arms.append({"dir": Path(d), "params": rec["run_info"]["parameters"], "train": rec["train_info"],
                     "duration_s": rec["run_info"]["duration_s"], "fingerprint": rec["run_info"].get("data_fingerprint"),
                     "git": rec["run_info"].get("git")})
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
        self._data_fingerprint: str | None = None
        self.weights_fingerprint: str | None = None  # the weights the arm started from (the zoo's, for tiny)
        self.resumes: dict | None = None  # the record of the unfinished run whose checkpoints this one continues
        self.lock: RunFolderLock | None = None
        self.reads_test = True  # whether the run scores the test split (experiments.reads_test)
        self.artifacts: list[str] = []
        self.status = "running"
        self._write("running", {})

    @property
    def split(self) -> str:
        """The split the run reports: "test" in a committed arm, "val" elsewhere (experiments.reads_test)."""
        return "test" if self.reads_test else "val"

    @property
    def data_fingerprint(self) -> str | None:
        return self._data_fingerprint

    @data_fingerprint.setter
    def data_fingerprint(self, value: str | None) -> None:
        self._same_as_resumed("data_fingerprint", value)
        self._data_fingerprint = value

    def record_weights(self, model) -> None:
        """Fingerprint the weights the arm starts from, before training: two arms with the same data
        and parameters but another zoo build differ here, and nowhere else in run.json."""
        fp = weights_fingerprint(model)
        self._same_as_resumed("weights_fingerprint", fp)
        self.weights_fingerprint = fp
        self._write(self.status, {})

    def _same_as_resumed(self, key: str, value) -> None:
        """A checkpoint continues only the data and starting weights it was trained from."""
        was = (self.resumes or {}).get("run_info", {}).get(key)
        if was and value and was != value:
            raise ValueError(f"{self.output_dir}: its checkpoint was trained from {key.split('_')[0]} {was}; this run "
                             f"has {value} (another data set or zoo build); rerun with overwrite = True (medlib run --force) "
                             "to remove the earlier run")

    # -- outputs -------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.output_dir / name

    def save_table(self, df, name: str, index: bool = False, floatfmt: str = ".4f") -> Path:
        """Write `name.csv` and `name.md`; returns the CSV path."""
        if not main_process():
            return self.path(f"{name}.csv")
        csv = fileio.write_text(self.path(f"{name}.csv"), table_csv(df, index=index))
        fileio.write_text(self.path(f"{name}.md"), to_markdown(df, index=index, floatfmt=floatfmt))
        self.artifacts += [f"{name}.csv", f"{name}.md"]
        return csv

    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        check_figure(fig, self.path(f"{name}.png"))
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
                "parameters": {**self.parameters, **({"output_dir": display_path(self.parameters["output_dir"])}
                                                     if self.parameters.get("output_dir") else {})},
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


def mark_failed(run_dir: str | Path, error: str, status: str = "failed") -> bool:
    """Turn a run left at "running" into `status` ("failed", or "interrupted" for Ctrl-C / SIGTERM) with
    `error` (what a kernel that died could not do itself); a finished or already ended run is left alone.
    Returns whether it wrote."""
    record = read_run(run_dir)
    if not record or record.get("train_info", {}).get("status") != "running":
        return False
    record["train_info"] = {**record["train_info"], "status": status, "error": error}
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
