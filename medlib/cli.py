"""`medlib` on the command line: list, run, sweep, aggregate, reproduce, data and zoo builds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medlib.experiments import EXPERIMENTS, get
from medlib.orchestrate import (
    RESULTS,
    aggregate_experiment,
    interruptible,
    reproduce,
    rescore_labels,
    run_arm,
    sweep,
)
from medlib.params import ParameterError, check_overrides, convert
from medlib.report import write_index
from medlib.runs import RunFolderBusy


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
    # imported here: heavy: only when a notebook runs
    from papermill.exceptions import PapermillExecutionError

    try:
        out, status = interruptible(lambda: run_arm(args.experiment, overrides, output_dir=args.output_dir, force=args.force,
                                                    log_output=args.log))
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
    outcome = interruptible(lambda: sweep(args.experiment, grid, fixed, force=args.force, jobs=args.jobs, results=args.results))
    print(f"finished {len(outcome['finished'])}, skipped {len(outcome['skipped'])} (already done), failed {len(outcome['failed'])}")
    for failure in outcome["failed"]:
        print(f"  failed: {failure['parameters']}: {failure['error'].strip().splitlines()[-1] if failure['error'].strip() else ''}")
    return 1 if outcome["failed"] else 0


def cmd_aggregate(args) -> int:
    aggregate_experiment(args.experiment, args.profile or "tiny")

    print(write_index(RESULTS))
    return 0


def cmd_reproduce(args) -> int:
    index, seconds, failed = interruptible(lambda: reproduce(args.only, args.profile, args.jobs, results=args.results))
    print(f"reproduce took {seconds:.0f} s; index: {index}; failed arms: {failed}")
    return 1 if failed else 0


def cmd_data(args) -> int:
    # imported here: heavy (torch / pandas): loaded only by the command that needs it
    from medlib.data.synthcxr import build, grounding_statistics, question_statistics

    ds = build(image_size=args.image_size)
    tables = {"question-table": question_statistics, "grounding-table": grounding_statistics}
    if args.action in tables:  # what data_cards/synthcxr_iu.md shows between its markers
        # imported here: pandas (about 0.3 s), for these tables only: `medlib list` stays quick
        import pandas as pd

        from medlib.tables import to_markdown

        print(to_markdown(pd.DataFrame(tables[args.action](ds)), floatfmt=".3f"), end="")
        return 0
    print(f"SynthCXR-IU: {len(ds.studies)} studies in {ds.root}")
    return 0


def cmd_metrics_report(args) -> int:
    for items, changed in rescore_labels(RESULTS).items():
        print(f"{items}: {len(changed)} reference report(s) labelled differently" + (f" ({', '.join(changed)})" if changed else ""))
    print(RESULTS / "metrics")
    return 0


def cmd_zoo(args) -> int:
    # imported here: heavy (torch / pandas): loaded only by the command that needs it
    from medlib.zoo import local_builds, zoo_dir
    from medlib.zoo import shipped as ship
    from medlib.zoo.adaptation import build_adaptation_zoo
    from medlib.zoo.clinicalblip import build_clinicalblip_zoo
    from medlib.zoo.medblip import build_medblip_zoo
    from medlib.zoo.minigpt_med import build_minigpt_zoo

    if args.action == "verify":
        problems = ship.verify()
        for line in problems:
            print(f"medlib zoo verify: {line}", file=sys.stderr)
        print(f"shipped zoo {ship.manifest()['build']}: " + ("every file matches the manifest" if not problems
                                                             else f"{len(problems)} problem(s)"))
        return 1 if problems else 0
    if args.action == "ship":
        from medlib.data.synthcxr import build

        with local_builds():
            root = zoo_dir(build(image_size=128, progress=False).fingerprint)
        print(ship.ship(root))
        return 0
    # In dependency order: the InstructBLIP zoo reuses the BLIP-2 ViT and the MiniGPT-Med LLaMA; notebook 04's
    # backbone is the BLIP-2 zoo's, its OPT taught the box grammar. Always in the cache: the shipped zoo is read only.
    builders = {"medblip": build_medblip_zoo, "minigpt_med": build_minigpt_zoo, "clinicalblip": build_clinicalblip_zoo,
                "adaptation": build_adaptation_zoo}
    papers = args.only or list(builders)
    with local_builds():
        for paper in papers:
            kwargs = {"zoo_seed": args.zoo_seed}
            if paper == "minigpt_med":  # the in-domain grounding stage: only build 0's arms start from it
                kwargs["in_domain"] = not args.zoo_seed
            root = builders[paper](force=args.force, **kwargs)
            print(root)
            if args.zoo_seed == 0 and ship.MANIFEST.exists():
                base = root if paper == "medblip" else root.parent
                rows = ship.compare(base, paper)
                same = sum(a == b for _, a, b in rows)
                print(f"{paper}: {same} of {len(rows)} weights files match the shipped build bit for bit")
                for name, a, b in rows:
                    if a != b:
                        print(f"  {name}: shipped {a}, this build {b}")
    return 0


def cmd_gpu_check(args) -> int:
    # imported here: heavy (torch / pandas): loaded only by the command that needs it
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
    sw.add_argument("--results", type=Path, default=RESULTS, help="the results folder (default: the checkout's results/)")
    sw.set_defaults(func=cmd_sweep)

    agg = sub.add_parser("aggregate", help="collect the finished arms of an experiment into tables and figures")
    agg.add_argument("experiment", choices=list(EXPERIMENTS))
    agg.add_argument("--profile", choices=["smoke", "tiny", "paper"])
    agg.set_defaults(func=cmd_aggregate)

    rep = sub.add_parser("reproduce", help="every experiment's sweeps, then results/README.md")
    rep.add_argument("--profile", choices=["smoke", "tiny", "paper"])
    rep.add_argument("--only", nargs="+", choices=list(EXPERIMENTS))
    rep.add_argument("--jobs", type=int, default=2, help="arms run at once (default 2: one per core)")
    rep.add_argument("--results", type=Path, default=RESULTS, help="the results folder (default: the checkout's results/)")
    rep.set_defaults(func=cmd_reproduce)

    data = sub.add_parser("data", help="build (or find cached) SynthCXR-IU; question-table / grounding-table: the data "
                          "card's VQA and grounding statistics")
    data.add_argument("action", choices=["build", "question-table", "grounding-table"])
    data.add_argument("--image-size", type=int, default=128)
    data.set_defaults(func=cmd_data)

    sub.add_parser("metrics-report", help="the labeller-vs-MeSH and implementation-gap tables in results/metrics/, and the "
                   "committed ClinicalBLIP reference reports labelled again (after a labeller change)"
                   ).set_defaults(func=cmd_metrics_report)

    zoo = sub.add_parser("zoo", help="the tiny pre-trained models: build them here (in the cache, and say whether they match "
                         "the shipped build), verify the shipped files, or ship a cache build (maintainers)")
    zoo.add_argument("action", choices=["build", "verify", "ship"])
    zoo.add_argument("--only", nargs="+", choices=["medblip", "minigpt_med", "clinicalblip", "adaptation"],
                     help="build these papers' zoos (with what they need) instead of all")
    zoo.add_argument("--zoo-seed", type=int, default=0, help="another build (seed 1234 + N) of MedBLIP's, MiniGPT-Med's "
                     "or ClinicalBLIP's zoo")
    zoo.add_argument("--force", action="store_true", help="rebuild from scratch what the cache holds")
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
    except (ParameterError, KeyError, FileNotFoundError, NotADirectoryError, PermissionError, RunFolderBusy) as err:
        print(f"medlib: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medlib: interrupted; every running arm was stopped and marked 'interrupted' in its run.json "
              "(the same command resumes from its checkpoint)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
