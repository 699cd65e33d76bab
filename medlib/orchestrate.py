"""Running experiments: one arm through papermill, a sweep of arms, the aggregation of finished arms,
and the whole reproduction. `medlib.cli` parses arguments and calls these; `medlib.gpu_check` and the
tests call them directly."""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import signal
import tempfile
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from medlib import fileio
from medlib.experiments import EXPERIMENTS, arm_name, get
from medlib.params import ParameterError, check_overrides
from medlib.paths import REPO_ROOT, cache_root
from medlib.report import write_index
from medlib.runs import (
    RunFolderLock,
    check_resumable,
    clear_run_folder,
    is_finished,
    main_process,
    mark_failed,
    read_run,
)

RESULTS = REPO_ROOT / "results"


def run_dir_for(experiment: str, parameters: dict, results: Path = RESULTS) -> Path:
    spec = get(experiment)
    return results / experiment / parameters.get("profile", spec.parameters()["profile"].default) / arm_name(spec.parameters(), parameters)


def check_arm(experiment: str, overrides: dict, origin: str) -> dict:
    """Every parameter of one arm checked (names, types, ranges, the experiment's own rules) and the
    full parameter set returned: all before a kernel starts or a folder is made."""
    spec = get(experiment)
    declared = spec.parameters()
    full = {**{k: p.default for k, p in declared.items()}, **check_overrides(declared, overrides, origin=origin)}
    spec.check(full)
    cache_root()  # a MEDLIB_CACHE that is a file is refused here, not inside the zoo build
    return full


# Set when Ctrl-C or SIGTERM reaches a sweep: every running arm's kernel is stopped and no new arm starts.
STOPPING = threading.Event()
_KERNELS: weakref.WeakSet = weakref.WeakSet()  # the kernel managers of the arms running in this process


@functools.cache
def _kernel_manager_class():
    """papermill's kernel manager, with two changes: local (IPC) sockets instead of TCP ports on localhost (no
    "running over TCP without encryption" warning, no port to collide), and every kernel registered, so that
    Ctrl-C can stop the kernels it started (they run in their own sessions, out of the terminal's reach).
    One class and one socket folder per process; each kernel's sockets have their own prefix in it."""
    # imported here: heavy: only when a notebook runs
    from jupyter_client.manager import AsyncKernelManager

    sockets = Path(tempfile.mkdtemp(prefix="medlib-kernels-"))

    class ArmKernelManager(AsyncKernelManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, transport="ipc", **kwargs)
            self.ip = str(sockets / uuid.uuid4().hex[:12])
            _KERNELS.add(self)

    return ArmKernelManager


def stop_kernels() -> int:
    """Kill every arm kernel this process started (each with its process group: a METEOR subprocess goes too).
    Returns how many were running."""
    stopped = 0
    for km in list(_KERNELS):
        pid = getattr(getattr(km, "provisioner", None), "pid", None)
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
                stopped += 1
            except (ProcessLookupError, PermissionError):
                pass
    return stopped


def run_arm(experiment: str, overrides: dict, output_dir: Path | None = None, force: bool = False,
            log_output: bool = False, results: Path = RESULTS) -> tuple[Path, str]:
    """Execute one arm with papermill. Returns (run folder, "finished" | "skipped"). A run that fails
    is left marked "failed" in its run.json, with the error; one stopped by Ctrl-C or SIGTERM "interrupted",
    its checkpoint kept for the same command to resume. The folder is locked for the run (a second run into
    it is refused); `force` first removes everything of the run before."""
    # imported here: heavy: only when a notebook runs
    import papermill

    spec = get(experiment)
    full = check_arm(experiment, overrides, origin=f"{experiment} ({spec.notebook_file})")
    overrides = {k: full[k] for k in overrides}
    out = fileio.check_directory(output_dir, "--output-dir") if output_dir else run_dir_for(experiment, full, results)
    full["output_dir"] = str(out)
    if not force and is_finished(out, full, spec.resolved):
        return out, "skipped"
    main = main_process()  # under `accelerate launch` every process runs the notebook; the first writes
    with RunFolderLock(out) if main else contextlib.nullcontext():
        previous = read_run(out)
        if previous and previous["train_info"].get("status") == "finished" and not force:
            raise ParameterError(f"{out}/run.json: holds a finished run with other parameters; "
                                 "pass --force to replace it or choose --output-dir")
        if force and main:
            clear_run_folder(out)
        check_resumable(out, spec.resolved(full), spec.resolved)
        out.mkdir(parents=True, exist_ok=True)
        os.environ["PAPERMILL_EXECUTION"] = "1"  # notebooks show static figures instead of widgets
        try:
            with tempfile.TemporaryDirectory() as scratch:
                papermill.execute_notebook(
                    str(spec.notebook), str(out / "notebook.ipynb" if main else Path(scratch) / "notebook.ipynb"),
                    parameters={**overrides, "output_dir": str(out)}, kernel_manager_class=_kernel_manager_class(),
                    kernel_name="python3", progress_bar=not log_output and main, log_output=log_output, cwd=str(REPO_ROOT),
                )
        except BaseException as err:  # the kernel marks a failing cell itself; this covers a kernel that died
            interrupted = STOPPING.is_set() or isinstance(err, KeyboardInterrupt)
            if interrupted:
                stop_kernels()
            if main:
                mark_failed(out, "interrupted (Ctrl-C or SIGTERM); the same command resumes from its checkpoint" if interrupted
                            else f"{type(err).__name__}: {str(err).strip()[-800:]}", "interrupted" if interrupted else "failed")
            raise
    if main and not is_finished(out):
        raise RuntimeError(f"{out}: the notebook ran to its end but did not mark run.json finished")
    return out, "finished"


def interruptible(work):
    """Run `work()` so that Ctrl-C and SIGTERM stop it within seconds: every arm kernel is killed, each running
    arm is marked "interrupted" (its checkpoint kept), and KeyboardInterrupt is raised for the caller to exit 130."""
    if threading.current_thread() is not threading.main_thread():
        return work()

    def on_signal(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGINT too: a shell starts a background job with SIGINT ignored, and Python then leaves it ignored
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    STOPPING.clear()
    try:
        return work()
    except KeyboardInterrupt:
        STOPPING.set()
        stop_kernels()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def expand_grid(grid: dict[str, list]) -> list[dict]:
    names = list(grid)
    arms = [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]
    # a "best" that resolved to a value the grid already lists must not run twice (two kernels, one folder)
    return [a for i, a in enumerate(arms) if a not in arms[:i]]


def sweep(experiment: str, grid: dict[str, list] | list[dict], fixed: dict | None = None, force: bool = False,
          results: Path = RESULTS, aggregate: bool = True, jobs: int = 1, echo=print) -> dict:
    """Run every arm of `grid` (each in a fresh kernel; a list of grids: the arms of all of them, in one
    pool); skip finished arms; survive failed ones.

    `jobs` > 1 runs that many kernels at once, each limited to one thread: the tiny models are
    too small for two threads to help one run, so two single-thread runs finish sooner."""

    fixed = fixed or {}
    STOPPING.clear()
    arms = []
    for one_grid in (grid if isinstance(grid, list) else [grid]):
        arms += [a for a in (expand_grid(one_grid) or [{}]) if a not in arms]
    # every arm checked before the first one starts
    pending = [check_arm(experiment, {**fixed, **arm}, origin=f"{experiment} sweep") for arm in arms]
    outcome = {"finished": [], "skipped": [], "failed": []}
    pending = [p for p in pending if force or not is_finished(run_dir_for(experiment, p, results), p, get(experiment).resolved)]
    if any(p["profile"] == "tiny" for p in pending):
        get(experiment).prepare_tiny([p for p in pending if p["profile"] == "tiny"])  # the zoo once, not in every parallel arm
    if jobs > 1:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
        # the Rust tokenizers' own thread pool, one per kernel, would contend with the other kernels for the cores
        os.environ["TOKENIZERS_PARALLELISM"] = "false"

    def one(arm):
        params = {**fixed, **arm}
        if STOPPING.is_set():
            return "failed", {"parameters": params, "error": "not started: the sweep was interrupted"}
        try:
            out, status = run_arm(experiment, params, force=force, results=results)
            return status, str(out)
        except ParameterError:
            raise  # a bad grid is the user's to fix
        except Exception as err:  # one failed arm must not sink the sweep
            if STOPPING.is_set():
                return "failed", {"parameters": params, "error": "interrupted"}
            echo(f"arm {params} failed: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}")
            return "failed", {"parameters": params, "error": f"{type(err).__name__}: {str(err)[-800:]}"}

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = [pool.submit(one, arm) for arm in arms]
        for future in tqdm(as_completed(futures), total=len(arms), desc=f"{experiment} sweep", unit="arm"):
            status, item = future.result()
            outcome[status].append(item)
    except KeyboardInterrupt:
        STOPPING.set()  # arms not started yet do not start; the running ones' kernels are killed
        stop_kernels()
        pool.shutdown(wait=True, cancel_futures=True)  # each running arm marks itself interrupted
        raise
    pool.shutdown(wait=True)
    if aggregate:
        aggregate_experiment(experiment, fixed.get("profile", get(experiment).parameters()["profile"].default), results)
    return outcome


def finished_runs(experiment: str, profile: str, results: Path = RESULTS) -> list[Path]:
    return sorted(p.parent for p in (results / experiment / profile).glob("*/run.json") if is_finished(p.parent))


def aggregate_experiment(experiment: str, profile: str, results: Path = RESULTS):
    spec = get(experiment)
    base = results / experiment / profile
    run_dirs = finished_runs(experiment, profile, results)
    if not run_dirs:
        return None
    return spec.aggregate(run_dirs, base)


def rescore_labels(results: Path = RESULTS) -> dict:
    """After the report labeller changed (the metrics manifest's inputs differ): its tables in results/metrics
    rewritten, and the committed ClinicalBLIP reference reports labelled again, each items file rewritten only
    where a label changed. Returns {items file: changed "split:id"}; the aggregation then re-scores from them."""
    # imported here: heavy (torch / pandas): loaded only by the command that needs it
    from medlib.metrics.report import write_reports
    from medlib.metrics.report_generation import relabel_references

    write_reports(results / "metrics")
    return {str(p): relabel_references(p) for p in sorted((results / "clinicalblip").glob("*/*/evaluation_items.csv.gz"))}


def _needs_best(grid: dict) -> bool:
    return any("best" in values for values in grid.values())


def reproduce(only: list[str] | None = None, profile: str | None = None, jobs: int = 2,
              results: Path = RESULTS) -> tuple[Path, float, int]:
    """Every sweep of every experiment (or of `only`), the aggregates, the metrics tables when their
    inputs changed, then results/README.md. Returns (index path, seconds, failed arms)."""
    # imported here: heavy (torch / pandas): loaded only by the command that needs it
    from medlib.metrics.report import up_to_date

    started, failed = time.time(), 0
    names = only or list(EXPERIMENTS)
    if not only and not up_to_date(results / "metrics"):  # the tables stay untouched when nothing they depend on changed
        rescore_labels(results)
    for name in names:
        spec = get(name)
        prof = profile or spec.parameters()["profile"].default
        fixed = {"profile": profile} if profile else {}
        # Consecutive sweeps without a "best" run in one pool, so no core idles between them; so do consecutive
        # sweeps with one, each resolved on the arms before the first of them, which their "best" is chosen from.
        grids = list(spec.sweeps)
        while grids:
            waits = _needs_best(grids[0])
            k = next((i for i, g in enumerate(grids) if _needs_best(g) != waits), len(grids))
            pool, grids = grids[:k], grids[k:]
            if waits:
                finished = finished_runs(name, prof, results)
                pool = [spec.resolve(g, finished) for g in pool]
            failed += len(sweep(name, pool, fixed, aggregate=False, jobs=jobs, results=results)["failed"])
        aggregate_experiment(name, profile or "tiny", results)
    return write_index(results), time.time() - started, failed
