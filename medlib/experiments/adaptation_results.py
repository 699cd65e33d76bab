"""Notebook 04's arms aggregated: per task and metric, each recipe at each budget against its image-shuffled
control and the text-only prior; the recipes compared at matched budget, paired on the same test items with
studies and seeds resampled together, Holm-corrected as one family; each recipe's budget chosen on validation;
the cost (trainable parameters, wall time per epoch, peak memory); figures and the computed verdict.
"""

from __future__ import annotations

import itertools
import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from medlib import fileio
from medlib.experiments.aggregate import ScoredArms
from medlib.metrics.bootstrap import (
    bootstrap_ci,
    holm,
    paired_study_bootstrap,
    paired_study_count_bootstrap,
    study_bootstrap,
    study_count_bootstrap,
)
from medlib.tables import write_figure, write_table

ALPHA = 0.05
RECIPES = ("medblip", "clinicalblip", "minigpt_med")  # models.adaptation.RECIPES (this module stays torch-free)
RECIPE_NAMES = {"medblip": "MedBLIP", "clinicalblip": "ClinicalBLIP", "minigpt_med": "MiniGPT-Med"}
BUDGETS = ("small", "large")
PARTS = {"test": "", "shuffled": "shuffled_", "prior": "prior_"}
CE_COUNTS = ("ce_tp", "ce_fp", "ce_fn")

DEGENERATE_SHARE = 0.95  # one answer for (nearly) every image: notebook 04's rule until it moves to medlib.claims


class Metric:
    """One task metric: a per-item mean of `column` over the items of `task` (of `kind`, if given), or
    (`column=None`) the abnormal-only CE micro F1 of the reports' summed counts."""

    def __init__(self, key: str, task: str, label: str, column: str | None, kind: str | None = None, primary: bool = False):
        self.key, self.task, self.label, self.column, self.kind, self.primary = key, task, label, column, kind, primary


METRICS = (
    Metric("vqa_rougeL", "vqa", "VQA ROUGE-L", "rougeL", primary=True),
    Metric("vqa_closed", "vqa", "VQA closed accuracy", "exact_match", kind="closed"),
    Metric("report_ce13", "report", "report CE-F1 (abnormal)", None, primary=True),
    Metric("report_meteor", "report", "report METEOR", "meteor"),
    Metric("grounding_iou", "grounding", "grounding strict IoU (position-variable)", "iou_strict", kind="variable", primary=True),
)


def micro_f1(counts: np.ndarray) -> np.ndarray:
    """Micro F1 of summed (tp, fp, fn), vectorised over a leading axis (0 where nothing was predicted or present)."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)


class Arms(ScoredArms):
    """The finished arms grouped by (recipe, budget), with their per-item scores read once."""

    def __init__(self, run_dirs: list[Path]):
        super().__init__(run_dirs, "adaptation", lambda a: (a["params"]["recipe"], a["params"]["budget"]))

    def index(self, m: Metric, split: str = "test") -> np.ndarray:
        it = self.items[split]
        sel = (it.task == m.task).to_numpy().copy()
        if m.kind:
            sel &= (it.kind == m.kind).to_numpy()
        return np.flatnonzero(sel)

    def studies(self, m: Metric, split: str = "test") -> list:
        return self.items[split].study.to_numpy()[self.index(m, split)].tolist()

    def scores(self, key: tuple, m: Metric, part: str = "test", split: str = "test") -> np.ndarray:
        """(seeds x items) of a mean metric, or (seeds x reports x 3) CE counts; `part` test / shuffled / prior."""
        prefix = PARTS[part]
        cols = [prefix + c for c in CE_COUNTS] if m.column is None else [prefix + m.column]
        idx = self.index(m, split)
        out = np.array([self.rows[a["dir"]][split][cols].to_numpy(dtype=float)[idx] for a in self.groups[key]])
        return out if m.column is None else out[..., 0]

    def value(self, key: tuple, m: Metric, part: str = "test", split: str = "test") -> dict:
        """{mean, lo, hi} over studies and seeds."""
        s = self.scores(key, m, part, split)
        if m.column is None:
            ci = study_count_bootstrap(s, micro_f1)
            return {"mean": ci["value"], "lo": ci["lo"], "hi": ci["hi"]}
        return study_bootstrap(s, self.studies(m, split))

    def paired(self, a: np.ndarray, b: np.ndarray, m: Metric) -> dict:
        return paired_study_count_bootstrap(a, b, micro_f1) if m.column is None else paired_study_bootstrap(a, b, self.studies(m))

    def cost(self, key: tuple, name: str) -> dict:
        """One cost in run.json's train_info: its mean over the seeds with a percentile bootstrap interval that
        resamples the seeds (each seed is one measurement of the cost; the test items do not enter it)."""
        v = [a["train"].get(name) for a in self.groups[key]]
        missing = [str(a["dir"]) for a, x in zip(self.groups[key], v) if x is None]
        if missing:
            raise ValueError(f"{missing[0]}: run.json's train_info has no '{name}'; re-run the arm")
        return bootstrap_ci(v, num_resamples=2000)


def all_zero(rows) -> bool:
    """Every arm among these summary rows scores 0 (its interval's top at 0): no recipe learnt the task."""
    return bool(len(rows)) and bool((rows.ci_hi <= 0).all())


def ordered(keys) -> list[tuple]:
    """(recipe, budget) keys in RECIPES, then BUDGETS order."""
    return sorted(keys, key=lambda k: (RECIPES.index(k[0]), BUDGETS.index(k[1])))


def pareto_front(values) -> np.ndarray:
    """For points sorted by cost, which are on the front: each better than every cheaper point."""
    best, keep = -np.inf, []
    for v in values:
        keep.append(bool(v > best))
        best = max(best, v)
    return np.array(keep, dtype=bool)


def label(key: tuple) -> str:
    return f"{RECIPE_NAMES[key[0]]} ({key[1]})"


def chosen_budget(arms: Arms, recipe: str, m: Metric) -> str | None:
    """The recipe's budget with the higher *validation* value of `m` (test never enters); ties to the smaller."""
    vals = {}
    for b in BUDGETS:
        if (recipe, b) in arms.groups:
            vals[b] = arms.value((recipe, b), m, split="val")["mean"]
    return max(vals, key=lambda b: (vals[b], -BUDGETS.index(b))) if vals else None


RESOLVERS = {}  # no sweep of notebook 04 has a "best"


def aggregate(run_dirs: list[Path], out_dir: Path):
    """All finished arms -> `summary`, `image_use`, `comparisons` (Holm over the family), `chosen`, `cost`,
    `comparison.json`, `verdict.md` and the two figures."""
    arms = Arms(run_dirs)

    write = partial(write_table, out_dir)  # (name, frame, title)

    keys = ordered(arms.groups)
    summary, use, cost = [], [], []
    for key in keys:
        group = arms.groups[key]
        c = {"recipe": RECIPE_NAMES[key[0]], "budget": key[1], "seeds": len(group),
             "trainable_params": group[0]["train"].get("trainable_params")}
        for name in ("seconds_per_epoch", "peak_memory_mb"):
            v = arms.cost(key, name)
            c[name], c[f"{name}_lo"], c[f"{name}_hi"] = v["mean"], v["lo"], v["hi"]
        cost.append(c)
        for m in METRICS:
            t, sh, pr = (arms.value(key, m, part) for part in ("test", "shuffled", "prior"))
            val = arms.value(key, m, split="val")
            summary.append({"recipe": RECIPE_NAMES[key[0]], "budget": key[1], "metric": m.label, "seeds": len(group),
                            "trainable_params": c["trainable_params"], "test": t["mean"], "ci_lo": t["lo"], "ci_hi": t["hi"],
                            "image_shuffled": sh["mean"], "text_prior": pr["mean"], "val": val["mean"]})
            g = arms.paired(arms.scores(key, m), arms.scores(key, m, "shuffled"), m)
            use.append({"recipe": RECIPE_NAMES[key[0]], "budget": key[1], "metric": m.label, "gap": g["diff"],
                        "ci_lo": g["lo"], "ci_hi": g["hi"], "p": g["p"]})
    comps = []
    for m, b in itertools.product(METRICS, BUDGETS):
        for r1, r2 in itertools.combinations(RECIPES, 2):
            if (r1, b) in arms.groups and (r2, b) in arms.groups:
                d = arms.paired(arms.scores((r1, b), m), arms.scores((r2, b), m), m)
                comps.append({"metric": m.label, "budget": b, "a": RECIPE_NAMES[r1], "b": RECIPE_NAMES[r2], "a_minus_b": d["diff"],
                              "ci_lo": d["lo"], "ci_hi": d["hi"], "p": d["p"], "seeds": f"{d['seeds_a']} vs {d['seeds_b']}"})
    for row, adj in zip(comps, holm([c["p"] for c in comps])):
        row["p_holm"] = adj
        row["separated"] = adj < ALPHA and (row["ci_lo"] > 0 or row["ci_hi"] < 0)
    chosen = []
    for m in METRICS:
        for r in RECIPES:
            b = chosen_budget(arms, r, m)
            if b is not None:
                t = arms.value((r, b), m)
                chosen.append({"metric": m.label, "recipe": RECIPE_NAMES[r], "chosen_budget": b,
                               "val": arms.value((r, b), m, split="val")["mean"], "test": t["mean"], "ci_lo": t["lo"], "ci_hi": t["hi"]})
    summary, use, comps, chosen, cost = map(pd.DataFrame, (summary, use, comps, chosen, cost))
    write("summary", summary, "Test value per recipe, budget and metric (95 % intervals over test studies and seeds), "
          "with the image-shuffled control, the text-only prior and the validation value.")
    write("image_use", use, "Image-use gap: the model minus its image-shuffled control, paired on the same test items.")
    write("comparisons", comps, "Recipes compared at matched budget, paired on the same test items (studies and seeds "
          "resampled together); p Holm-corrected over every row; separated: Holm p < 0.05 and the interval excludes 0.")
    write("chosen", chosen, "Each recipe's budget chosen on validation, per metric, reported on test.")
    write("cost", cost, "Cost per recipe and budget: trainable parameters; wall time per epoch (s) and peak memory (MB), "
          "mean over seeds with a 95 % percentile bootstrap interval that resamples the seeds (`_lo`/`_hi`). With 3 "
          "seeds it is the seeds' range: a resample of the slowest seed alone has probability 1/27, above 2.5 %.")
    winners = {m.label: {b: winner(comps, m.label, b) for b in BUDGETS} for m in METRICS}
    for m in METRICS:  # equal at zero is no recipe learning the task, not recipes of equal skill: said so
        for b in BUDGETS:
            rows = summary[(summary.metric == m.label) & (summary.budget == b)]
            if all_zero(rows):
                winners[m.label][b] = "not told apart: every arm scores 0"
            blind = without_image(comps, use, m.label, b)
            if blind:
                winners[m.label][b] += f" ({', '.join(blind)}: image-use gap not above 0, a win without reading the image)"
    stuck = degenerate(arms)
    write("degenerate", stuck, f"Answer concentration per recipe, budget and task on test: runs whose most common answer "
          f"is given for at least {DEGENERATE_SHARE:.0%} of the items (one answer for every image), of the runs; the mean "
          "number of distinct answers and the mean share of the most common one.")
    fileio.write_json(out_dir / "comparison.json", {"winners": winners, "primary": [m.label for m in METRICS if m.primary],
                                                    "notebook": "notebooks/04_adaptation_strategies.ipynb"})
    fileio.write_text(out_dir / "verdict.md", verdict(summary, use, comps, chosen, cost, winners, stuck))
    _figures(summary, cost, out_dir)
    return summary


def degenerate(arms: Arms):
    """Per recipe, budget and task, from each run's `answer_concentration.csv`: how many runs give one answer for
    DEGENERATE_SHARE of the test items, of how many; counted per run, never on the mean over runs."""
    rows = []
    for key in ordered(arms.groups):
        frames = [pd.read_csv(a["dir"] / "answer_concentration.csv") for a in arms.groups[key]
                  if (a["dir"] / "answer_concentration.csv").exists()]
        if not frames:
            continue
        for task, g in pd.concat(frames).groupby("task", sort=False):
            rows.append({"recipe": RECIPE_NAMES[key[0]], "budget": key[1], "task": task,
                         "stuck_runs": int((g.top_answer_share >= DEGENERATE_SHARE).sum()), "runs": len(g),
                         "distinct_answers": float(g.distinct_answers.mean()), "top_answer_share": float(g.top_answer_share.mean())})
    return pd.DataFrame(rows, columns=["recipe", "budget", "task", "stuck_runs", "runs", "distinct_answers", "top_answer_share"])


def _beats(rows) -> dict:
    """{recipe: the recipes it is separated above} among comparison rows."""
    beats = {}
    for _, r in rows[rows.separated].iterrows():
        hi, lo = (r["a"], r["b"]) if r["a_minus_b"] > 0 else (r["b"], r["a"])
        beats.setdefault(hi, set()).add(lo)
    return beats


def without_image(comps, use, metric: str, budget: str) -> list[str]:
    """The recipes that beat another at this budget while their own image-use gap on the metric is not above 0:
    what they win, they win by the text they write, not by reading the image."""
    rows = comps[(comps.metric == metric) & (comps.budget == budget)] if len(comps) else comps
    gaps = use[(use.metric == metric) & (use.budget == budget)].set_index("recipe").ci_lo if len(use) else {}
    return sorted(r for r in _beats(rows) if r in gaps and not gaps[r] > 0) if len(rows) else []


def winner(comps, metric: str, budget: str) -> str:
    """The recipe separated above both others at this budget, else what the separated pairs say, else
    "not told apart": in words the comparisons decide."""
    rows = comps[(comps.metric == metric) & (comps.budget == budget)] if len(comps) else comps
    if not len(rows):
        return "not run"
    beats = _beats(rows)
    names = set(rows.a) | set(rows.b)
    for name, lows in beats.items():
        if lows == names - {name}:
            return f"{name} wins"
    if beats:
        return "; ".join(f"{h} > {', '.join(sorted(lo))}" for h, lo in sorted(beats.items())) + "; the rest not told apart"
    return "not told apart"


def _fmt(v: float, lo: float, hi: float, digits: int = 3) -> str:
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def verdict(summary, use, comps, chosen, cost, winners, stuck) -> str:
    lines = ["Computed by `medlib.experiments.adaptation_results.verdict` from `summary`, `image_use`, `comparisons`, "
             "`chosen`, `cost` and `degenerate`.", ""]
    lines.append("**Which recipe wins, at matched budget** (paired intervals over test studies and seeds, Holm-corrected "
                 f"over all {len(comps)} comparisons):")
    for metric, by_budget in winners.items():
        lines.append(f"- {metric}: " + "; ".join(f"{b} budget: {w}" for b, w in by_budget.items()) + ".")
    lines += ["", "**Does each recipe read the image?** The image-use gap (model minus image-shuffled control), per task's "
              "headline metric:"]
    for metric in [m.label for m in METRICS if m.primary]:
        rows = use[use.metric == metric]
        reads = [f"{r.recipe} ({r.budget}) {r.gap:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]" for r in rows.itertuples()]
        above = int(((rows.ci_lo > 0)).sum())
        lines.append(f"- {metric}: {above} of {len(rows)} arms have a gap above 0: " + "; ".join(reads) + ".")
        s = summary[summary.metric == metric]
        beats_prior = int((s.ci_lo > s.text_prior).sum())
        lines.append(f"  Against the text-only prior ({s.text_prior.iloc[0]:.3f}): {beats_prior} of {len(s)} arms' intervals lie above it.")
    lines += ["", "**Degenerate behaviour** (measured per run, not averaged away):"]
    for metric in [m.label for m in METRICS if m.primary]:
        s = summary[summary.metric == metric]
        if all_zero(s):
            lines.append(f"- {metric}: every arm scores 0 on test (text-only prior {s.text_prior.iloc[0]:.3f}): no recipe "
                         "learns this task at this training length, so the comparison says nothing about the recipes here.")
    if len(stuck):
        for task, g in stuck.groupby("task", sort=False):
            bad = g[g.stuck_runs > 0]
            named = "; ".join(f"{r.recipe} ({r.budget}) {r.stuck_runs} of {r.runs}" for r in bad.itertuples())
            lines.append(f"- {task}: runs giving one answer for at least {DEGENERATE_SHARE:.0%} of the test items: "
                         + (named if len(bad) else "none") + f" (distinct answers per run: {g.distinct_answers.min():.0f}"
                         f"-{g.distinct_answers.max():.0f}).")
    lines += ["", "**Each recipe at its budget chosen on validation** (test value):"]
    for metric in [m.label for m in METRICS if m.primary]:
        rows = chosen[chosen.metric == metric]
        lines.append(f"- {metric}: " + "; ".join(f"{r.recipe} {r.chosen_budget} {_fmt(r.test, r.ci_lo, r.ci_hi)}" for r in rows.itertuples()) + ".")
    lines += ["", "**Cost** (mean over seeds, 95 % bootstrap interval over seeds; wall time on this machine's CPU "
              "threads, peak memory of the whole process):"]
    for r in cost.itertuples():
        lines.append(f"- {r.recipe} ({r.budget}): {int(r.trainable_params):,} trainable parameters, "
                     f"{_fmt(r.seconds_per_epoch, r.seconds_per_epoch_lo, r.seconds_per_epoch_hi, 1)} s an epoch, peak "
                     f"{_fmt(r.peak_memory_mb, r.peak_memory_mb_lo, r.peak_memory_mb_hi, 0)} MB.")
    fastest = cost.loc[cost.seconds_per_epoch.idxmin()]
    slowest = cost.loc[cost.seconds_per_epoch.idxmax()]
    lines.append(f"- Fastest per epoch: {fastest.recipe} ({fastest.budget}); slowest: {slowest.recipe} ({slowest.budget}), "
                 f"{slowest.seconds_per_epoch / fastest.seconds_per_epoch:.1f} x as long.")
    return "\n".join(lines) + "\n"


def _figures(summary, cost, out_dir: Path) -> None:
    # imported here: heavy: figures only
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import seaborn as sns

    sns.set_theme(style="whitegrid")  # set here: the style must not depend on which aggregation ran before in the process
    merged = summary.merge(cost[["recipe", "budget", "seconds_per_epoch", "seconds_per_epoch_lo", "seconds_per_epoch_hi"]],
                           on=["recipe", "budget"])
    for x, name, xlabel in (("trainable_params", "quality_vs_parameters", "trainable parameters (log scale)"),
                            ("seconds_per_epoch", "quality_vs_time", "wall time per epoch (s, 95 % interval over seeds)")):
        fig, grid = plt.subplots(2, 3, figsize=(11, 6.4), squeeze=False)
        axes = grid.ravel()
        for ax, m in zip(axes, METRICS):
            rows = merged[merged.metric == m.label]
            for k, r in enumerate(RECIPES):
                pts = rows[rows.recipe == RECIPE_NAMES[r]].sort_values(x)
                if not len(pts):
                    continue
                xerr = None if x == "trainable_params" else [pts[x] - pts[x + "_lo"], pts[x + "_hi"] - pts[x]]
                ax.errorbar(pts[x], pts.test, yerr=[pts.test - pts.ci_lo, pts.ci_hi - pts.test], xerr=xerr, marker="o",
                            capsize=3, ls="none", color=f"C{k}", label=RECIPE_NAMES[r])
                front = pts[pareto_front(pts.test.to_numpy())]
                ax.plot(front[x], front.test, color=f"C{k}")  # the recipe's front: a dominated budget is left off the line
                ax.scatter(pts[x], pts.image_shuffled, marker="x", color=f"C{k}", alpha=0.6)
            if len(rows):
                ax.axhline(rows.text_prior.iloc[0], color="0.4", ls=":", lw=1)
                if all_zero(rows):  # said on the panel: a flat line at 0 is no recipe learning the task
                    ax.text(0.5, 0.6, "every arm scores 0", transform=ax.transAxes, ha="center", fontsize=9, color="0.3")
            if x == "trainable_params":  # a decade and more: log, labelled 50k / 100k / 200k / 500k
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels on a short log axis overlap
            ax.set_title(m.label, fontsize=10)
            ax.set_xlabel(xlabel, fontsize=9)
        for ax in grid[:, 0]:
            ax.set_ylabel("test value (95 % interval)", fontsize=9)
        handles, labels = axes[0].get_legend_handles_labels()
        handles += [plt.Line2D([], [], marker="x", ls="", color="0.3"), plt.Line2D([], [], ls=":", color="0.4")]
        labels += ["image-shuffled control", "text-only prior"]
        legend_ax = axes[len(METRICS)]  # the sixth panel holds the legend
        legend_ax.axis("off")
        legend_ax.legend(handles, labels, loc="center", fontsize=9, frameon=False)
        fig.suptitle("The three recipes on one backbone: each line is a recipe's front (a budget no better than a cheaper one is off it)", fontsize=11)
        fig.tight_layout()
        write_figure(fig, out_dir / f"{name}.png", (summary, cost), dpi=90)
        plt.close(fig)


def front_line(results: Path, profile: str = "tiny") -> str | None:
    """The front table's sentence on the comparison, from `comparison.json` (None before it has run)."""
    path = Path(results) / "adaptation" / profile / "comparison.json"
    if not path.exists():
        return None
    c = json.loads(path.read_text())
    parts = [f"{metric}: " + ", ".join(f"{b} {w}" for b, w in c["winners"][metric].items()) for metric in c["primary"]]
    return ("**Which recipe wins per task** (the three recipes on one backbone, [notebook 04](../" + c["notebook"] +
            "), [verdict](adaptation/" + profile + "/verdict.md)), at matched budget: " + "; ".join(parts) + ".")
