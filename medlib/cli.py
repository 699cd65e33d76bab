"""`medlib` on the command line: list, run, sweep, aggregate, reproduce, data and zoo builds."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

from medlib import fileio
from medlib.experiments import EXPERIMENTS, arm_name, get
from medlib.params import ParameterError, check_overrides, convert
from medlib.paths import REPO_ROOT, cache_root
from medlib.runs import is_finished, main_process, mark_failed, read_run

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


def run_arm(experiment: str, overrides: dict, output_dir: Path | None = None, force: bool = False,
            log_output: bool = False, results: Path = RESULTS) -> tuple[Path, str]:
    """Execute one arm with papermill. Returns (run folder, "finished" | "skipped"). A run that fails
    is left marked "failed" in its run.json, with the error."""
    import papermill

    spec = get(experiment)
    full = check_arm(experiment, overrides, origin=f"{experiment} ({spec.notebook_file})")
    overrides = {k: full[k] for k in overrides}
    out = fileio.check_directory(output_dir, "--output-dir") if output_dir else run_dir_for(experiment, full, results)
    full["output_dir"] = str(out)
    if not force and is_finished(out, full):
        return out, "skipped"
    previous = read_run(out)
    if previous and previous["train_info"].get("status") == "finished" and not force:
        raise ParameterError(f"{out}/run.json: holds a finished run with other parameters; "
                             "pass --force to replace it or choose --output-dir")
    out.mkdir(parents=True, exist_ok=True)
    main = main_process()  # under `accelerate launch` every process runs the notebook; the first writes
    if force and main:
        (out / "run.json").unlink(missing_ok=True)
    os.environ["PAPERMILL_EXECUTION"] = "1"  # notebooks show static figures instead of widgets
    try:
        with tempfile.TemporaryDirectory() as scratch:
            papermill.execute_notebook(
                str(spec.notebook), str(out / "notebook.ipynb" if main else Path(scratch) / "notebook.ipynb"),
                parameters={**overrides, "output_dir": str(out)},
                kernel_name="python3", progress_bar=not log_output and main, log_output=log_output, cwd=str(REPO_ROOT),
            )
    except BaseException as err:  # the kernel marks a failing cell itself; this covers a kernel that died
        if main:
            mark_failed(out, f"{type(err).__name__}: {str(err).strip()[-800:]}")
        raise
    if main and not is_finished(out):
        raise RuntimeError(f"{out}: the notebook ran to its end but did not mark run.json finished")
    return out, "finished"


def expand_grid(grid: dict[str, list]) -> list[dict]:
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def sweep(experiment: str, grid: dict[str, list], fixed: dict | None = None, force: bool = False,
          results: Path = RESULTS, aggregate: bool = True, jobs: int = 1, echo=print) -> dict:
    """Run every arm of `grid` (each in a fresh kernel); skip finished arms; survive failed ones.

    `jobs` > 1 runs that many kernels at once, each limited to one thread: the tiny models are
    too small for two threads to help one run, so two single-thread runs finish sooner."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    fixed = fixed or {}
    arms = expand_grid(grid) or [{}]
    # every arm checked before the first one starts
    pending = [check_arm(experiment, {**fixed, **arm}, origin=f"{experiment} sweep") for arm in arms]
    outcome = {"finished": [], "skipped": [], "failed": []}
    pending = [p for p in pending if force or not is_finished(run_dir_for(experiment, p, results), p)]
    if any(p["profile"] == "tiny" for p in pending):
        get(experiment).prepare_tiny()  # build the shared zoo once, not in every parallel arm
    if jobs > 1:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"

    def one(arm):
        params = {**fixed, **arm}
        try:
            out, status = run_arm(experiment, params, force=force, results=results)
            return status, str(out)
        except ParameterError:
            raise  # a bad grid is the user's to fix
        except Exception as err:  # one failed arm must not sink the sweep
            echo(f"arm {params} failed: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}")
            return "failed", {"parameters": params, "error": f"{type(err).__name__}: {str(err)[-800:]}"}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for status, item in tqdm(pool.map(one, arms), total=len(arms), desc=f"{experiment} sweep", unit="arm"):
            outcome[status].append(item)
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


def _parse_pairs(pairs: list[list[str]] | None) -> dict:
    return {name: value for name, value in (pairs or [])}


def _parse_grid(experiment: str, items: list[str]) -> dict[str, list]:
    declared = get(experiment).parameters()
    grid = {}
    for item in items:
        if "=" not in item:
            raise ParameterError(f"--grid {item!r}: expected NAME=V1,V2,...")
        name, values = item.split("=", 1)
        if name not in declared:
            check_overrides(declared, {name: values}, origin=f"--grid {item}")
        grid[name] = [convert(declared[name], v) for v in values.split(",")]
        for v in grid[name]:
            check_overrides(declared, {name: v}, origin=f"--grid {item}")
    return grid


def cmd_list(args) -> int:
    for spec in EXPERIMENTS.values():
        print(f"{spec.name}  —  {spec.title}\n  notebook: notebooks/{spec.notebook_file}")
        for p in spec.parameters().values():
            print(f"    {p.describe()}")
        print()
    return 0


def cmd_run(args) -> int:
    overrides = _parse_pairs(args.param)
    if args.profile:
        overrides["profile"] = args.profile
    from papermill.exceptions import PapermillExecutionError

    try:
        out, status = run_arm(args.experiment, overrides, output_dir=args.output_dir, force=args.force, log_output=args.log)
    except PapermillExecutionError as err:
        print(f"medlib: the run failed in cell {err.exec_count}: {err.ename}: {err.evalue} "
              f"(the executed notebook and run.json are in its output folder)", file=sys.stderr)
        return 1
    print(f"{status}: {out}")
    return 0


def cmd_sweep(args) -> int:
    grid = _parse_grid(args.experiment, args.grid)
    fixed = _parse_pairs(args.param)
    if args.profile:
        fixed["profile"] = args.profile
    outcome = sweep(args.experiment, grid, fixed, force=args.force, jobs=args.jobs)
    print(f"finished {len(outcome['finished'])}, skipped {len(outcome['skipped'])} (already done), failed {len(outcome['failed'])}")
    for failure in outcome["failed"]:
        print(f"  failed: {failure['parameters']}: {failure['error'].strip().splitlines()[-1] if failure['error'].strip() else ''}")
    return 1 if outcome["failed"] else 0


def cmd_aggregate(args) -> int:
    aggregate_experiment(args.experiment, args.profile or "tiny")
    from medlib.report import write_index

    print(write_index(RESULTS))
    return 0


def cmd_reproduce(args) -> int:
    from medlib.report import write_index

    started, failed = time.time(), 0
    names = args.only or list(EXPERIMENTS)
    if not args.only:
        from medlib.experiments.metrics_report import up_to_date, write_reports

        if not up_to_date(RESULTS / "metrics"):  # the tables stay untouched when nothing they depend on changed
            write_reports(RESULTS / "metrics")
    for name in names:
        spec = get(name)
        profile = args.profile or spec.parameters()["profile"].default
        for grid in spec.sweeps:
            fixed = {"profile": args.profile} if args.profile else {}
            grid = spec.resolve(grid, finished_runs(name, profile))
            failed += len(sweep(name, grid, fixed, aggregate=False, jobs=args.jobs)["failed"])
        aggregate_experiment(name, args.profile or "tiny")
    index = write_index(RESULTS)
    print(f"reproduce took {time.time() - started:.0f} s; index: {index}; failed arms: {failed}")
    return 1 if failed else 0


def cmd_data(args) -> int:
    from medlib.data.synthcxr import build

    ds = build(image_size=args.image_size)
    print(f"SynthCXR-IU: {len(ds.studies)} studies in {ds.root}")
    return 0


def cmd_metrics_report(args) -> int:
    from medlib.experiments.metrics_report import write_reports

    for path in write_reports(RESULTS / "metrics"):
        print(path)
    return 0


def cmd_zoo(args) -> int:
    from medlib.zoo import build_clinicalblip_zoo, build_minigpt_zoo, build_zoo

    # In dependency order: the InstructBLIP zoo reuses the BLIP-2 ViT and the MiniGPT-Med LLaMA.
    for build in (build_zoo, build_minigpt_zoo, build_clinicalblip_zoo):
        print(build(force=args.force))
    return 0


def cmd_gpu_check(args) -> int:
    from medlib.gpu_check import run

    summary = run(only=args.only)
    for row in summary["checks"]:
        print(f"{row['experiment']}: {row['status']} in {row['seconds']} s" + (f" ({row['error'].splitlines()[-1]})" if "error" in row else ""))
    return 0 if all(r["status"] == "finished" for r in summary["checks"]) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="the experiments and their parameters").set_defaults(func=cmd_list)

    def with_params(p):
        p.add_argument("experiment", choices=list(EXPERIMENTS))
        p.add_argument("--profile", choices=["smoke", "tiny", "paper"])
        p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="override a notebook parameter")
        p.add_argument("--force", action="store_true", help="re-run even if a finished result exists")
        return p

    run = with_params(sub.add_parser("run", help="execute one arm of an experiment with papermill"))
    run.add_argument("--output-dir", type=Path)
    run.add_argument("--log", action="store_true", help="stream the notebook's output instead of a progress bar")
    run.set_defaults(func=cmd_run)

    sw = with_params(sub.add_parser("sweep", help="one run per arm of a grid, then one table and figure"))
    sw.add_argument("--grid", nargs="+", required=True, metavar="NAME=V1,V2,...")
    sw.add_argument("--jobs", type=int, default=2, help="arms run at once (default 2: one per core)")
    sw.set_defaults(func=cmd_sweep)

    agg = sub.add_parser("aggregate", help="collect the finished arms of an experiment into tables and figures")
    agg.add_argument("experiment", choices=list(EXPERIMENTS))
    agg.add_argument("--profile", choices=["smoke", "tiny", "paper"])
    agg.set_defaults(func=cmd_aggregate)

    rep = sub.add_parser("reproduce", help="every experiment's sweeps, then results/README.md")
    rep.add_argument("--profile", choices=["smoke", "tiny", "paper"])
    rep.add_argument("--only", nargs="+", choices=list(EXPERIMENTS))
    rep.add_argument("--jobs", type=int, default=2, help="arms run at once (default 2: one per core)")
    rep.set_defaults(func=cmd_reproduce)

    data = sub.add_parser("data", help="build (or find cached) SynthCXR-IU")
    data.add_argument("action", choices=["build"])
    data.add_argument("--image-size", type=int, default=128)
    data.set_defaults(func=cmd_data)

    sub.add_parser("metrics-report", help="the labeller-vs-MeSH and implementation-gap tables in results/metrics/"
                   ).set_defaults(func=cmd_metrics_report)

    zoo = sub.add_parser("zoo", help="build (or find cached) the pre-trained tiny models of all three papers")
    zoo.add_argument("action", choices=["build"])
    zoo.add_argument("--force", action="store_true")
    zoo.set_defaults(func=cmd_zoo)
    gpu = sub.add_parser("gpu-check", help="each notebook's paper path at full size with random weights on a GPU: "
                         "two training steps and a generation; writes results/gpu_check/")
    gpu.add_argument("--only", nargs="+", choices=list(EXPERIMENTS))
    gpu.set_defaults(func=cmd_gpu_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ParameterError, KeyError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        print(f"medlib: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
