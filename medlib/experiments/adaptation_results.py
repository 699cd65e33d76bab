"""Notebook 04's arms aggregated on the claims framework (`medlib.claims`, docs/claims.md): one claim per task,
each paper's recipe against the other two at a matched budget, tested part by part on three builds of the shared
backbone; beside it, described and not tested, each arm against its image-shuffled control and the text-only
prior, the recipes compared at the small budget (build 0), each recipe's budget chosen on validation, the cost,
and the figures.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from medlib import claims as cl
from medlib import fileio
from medlib.experiments.aggregate import Outputs, ScoredArms, pair_runs, provenance_line, run_unit
from medlib.metrics.bootstrap import bootstrap_ci
from medlib.plots import recipe_fronts
from medlib.tables import write_figure

RECIPES = ("medblip", "clinicalblip", "minigpt_med")  # models.adaptation.RECIPES (this module stays torch-free)
RECIPE_NAMES = {"medblip": "MedBLIP", "clinicalblip": "ClinicalBLIP", "minigpt_med": "MiniGPT-Med"}
BUDGETS = ("small", "large")
PARTS = {"test": "", "shuffled": "shuffled_", "prior": "prior_"}
CE_COUNTS = ("ce_tp", "ce_fp", "ce_fn")

DEGENERATE_SHARE = 0.95  # one answer for (nearly) every image


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
PRIMARY = {m.task: m for m in METRICS if m.primary}

# The claims, written before the runs that decide them: on its own paper's task, each paper's recipe beats the
# other two at the large budget (about 300,000 trainable parameters each; MiniGPT-Med's r = 68 is near its paper's
# 64). Checks: it beats its image-shuffled control and the text-only prior. No paper makes this claim (none compares
# its recipe with the others'), so no paper_effect. When no arm is shown to beat the text-only prior the word is
# "inconclusive" whatever the parts say (`gate`): a win among arms that do not read the image decides nothing.
CLAIM_BUDGET = "large"
OWN = {"vqa": "medblip", "report": "clinicalblip", "grounding": "minigpt_med"}


def _claim(task: str) -> cl.Claim:
    own, m = OWN[task], PRIMARY[task]
    name = RECIPE_NAMES[own]
    parts = tuple(cl.Part(f"beats_{r}", f"{name} beats {RECIPE_NAMES[r]}", own, r, m.key) for r in RECIPES if r != own)
    parts += (cl.Part("image", f"{name} beats its image-shuffled control", own, "shuffled", m.key, check=True),
              cl.Part("prior", f"{name} beats the text-only prior", own, "prior", m.key, check=True))
    return cl.Claim(f"adaptation_{task}", name, f"{m.label}: {name}'s recipe, its paper's, beats the other two at a matched "
                    "budget", parts)


CLAIMS = {task: _claim(task) for task in OWN}


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

    def studies(self, m: Metric, split: str = "test") -> np.ndarray:
        return self.items[split].study.to_numpy()[self.index(m, split)]

    def scores(self, arms: list[dict], m: Metric, part: str = "test", split: str = "test") -> np.ndarray:
        """(runs x items) of a mean metric, or (runs x reports x 3) CE counts; `part` test / shuffled / prior."""
        cols = [PARTS[part] + c for c in CE_COUNTS] if m.column is None else [PARTS[part] + m.column]
        idx = self.index(m, split)
        out = np.array([self.rows[a["dir"]][split][cols].to_numpy(dtype=float)[idx] for a in arms])
        return out if m.column is None else out[..., 0]

    def _paired(self, a: list[dict], b: list[dict] | None, m: Metric, a_part: str = "test", b_part: str = "test",
                split: str = "test"):
        """Runs `a` (under `a_part`) minus runs `b` (under `b_part`; None: nothing, the level of `a`) on the same items:
        a cl.Paired (a mean metric) or cl.PairedCounts (CE-F1 of summed counts)."""
        builds, studies = np.array([run_unit(x)[0] for x in a]), self.studies(m, split)
        x = self.scores(a, m, a_part, split)
        y = self.scores(b, m, b_part, split) if b is not None else np.zeros_like(x)
        if m.column is None:
            return cl.PairedCounts(x, y, builds, studies, micro_f1)
        return cl.Paired(x - y, builds, studies)

    def paired(self, a_key: tuple, b_key: tuple | None, m: Metric, part: str = "test"):
        """Arm `a_key` minus arm `b_key`, or minus `a_key`'s own `part` (its image-shuffled control, the text-only
        prior), on the test items of the runs both have."""
        a, b, _ = pair_runs(self.groups[a_key], None if b_key is None else self.groups.get(b_key, []),
                            f"{label(a_key)} and {label(b_key or a_key)}")
        return self._paired(a, b, m, b_part=part)

    def level(self, key: tuple, m: Metric, part: str = "test", split: str = "test", builds=None) -> dict:
        """{mean, lo, hi, runs}: the metric of the group's runs (of `builds`, if given) under `part`: the mean over
        builds of each build's mean, with a 95 % hierarchical interval (builds, runs within builds, studies)."""
        group = [a for a in self.groups[key] if builds is None or run_unit(a)[0] in builds]
        mean, lo, hi = cl.interval(self._paired(group, None, m, a_part=part, split=split), 2000)
        return {"mean": mean, "lo": lo, "hi": hi, "runs": len(group)}

    def cost(self, key: tuple, name: str) -> dict:
        """One cost in run.json's train_info: its mean over the runs with a percentile bootstrap interval that
        resamples the runs (each run is one measurement of the cost; the test items do not enter it)."""
        v = [a["train"].get(name) for a in self.groups[key]]
        missing = [str(a["dir"]) for a, x in zip(self.groups[key], v) if x is None]
        if missing:
            raise ValueError(f"{missing[0]}: run.json's train_info has no '{name}'; re-run the arm")
        return bootstrap_ci(v, num_resamples=2000)


def ordered(keys) -> list[tuple]:
    """(recipe, budget) keys in RECIPES, then BUDGETS order."""
    return sorted(keys, key=lambda k: (RECIPES.index(k[0]), BUDGETS.index(k[1])))


def label(key: tuple) -> str:
    return f"{RECIPE_NAMES[key[0]]} ({key[1]})"


RESOLVERS: dict = {}  # no sweep of notebook 04 has a "best"


def gate(arms: Arms, m: Metric, budget: str = CLAIM_BUDGET) -> str:
    """Why the word is "inconclusive" whatever the parts say, or "": no arm at this budget is shown to beat the
    text-only prior (its 95 % interval above it), so no recipe is shown to read the image for the task."""
    gaps = [cl.interval(arms.paired((r, budget), None, m, "prior")) for r in RECIPES if (r, budget) in arms.groups]
    if any(lo > 0 for _, lo, _ in gaps):
        return ""
    if all(mean < 0 for mean, _, _ in gaps):
        return ("no recipe reads the image for this task at this budget: every arm's mean lies below the text-only prior "
                "and no arm's 95 % interval lies above it")
    return ("no recipe reads the image for this task at this budget: no arm's 95 % interval lies above the text-only "
            "prior")


def claim_word(results: list[cl.PartResult], why_not: str) -> str:
    """The claim's word: the framework's from its parts, unless the gate closed (`gate`)."""
    return "inconclusive" if why_not else cl.word(results)


def test_claims(arms: Arms) -> dict[str, dict]:
    """{task: {"task", "claim", "results", "word", "gate"}}: every claim's parts paired on the runs both arms have (the large
    budget), Holm-corrected within the claim."""
    out = {}
    for task, claim in CLAIMS.items():
        m = PRIMARY[task]
        paired = {p.key: arms.paired((p.a, CLAIM_BUDGET), None if p.b in PARTS else (p.b, CLAIM_BUDGET), m,
                                     p.b if p.b in PARTS else "test") for p in claim.parts}
        results = cl.test_parts(claim, paired)
        why_not = gate(arms, m)
        out[task] = {"task": task, "claim": claim, "results": results, "word": claim_word(results, why_not), "gate": why_not}
    return out


def claims_table(tested: dict) -> pd.DataFrame:
    return pd.concat([cl.table(t["results"]).assign(claim=t["claim"].key, word=t["word"]) for t in tested.values()],
                     ignore_index=True)


def summary_table(arms: Arms) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, cost): per recipe, budget and metric the test value with its interval, the image-shuffled control,
    the text-only prior and the validation value; per recipe and budget the cost."""
    summary, cost = [], []
    for key in ordered(arms.groups):
        group = arms.groups[key]
        c = {"recipe": RECIPE_NAMES[key[0]], "budget": key[1], "runs": len(group),
             "zoo_builds": len({run_unit(a)[0] for a in group}), "trainable_params": group[0]["train"].get("trainable_params")}
        for name in ("seconds_per_epoch", "peak_memory_mb"):
            v = arms.cost(key, name)
            c[name], c[f"{name}_lo"], c[f"{name}_hi"] = v["mean"], v["lo"], v["hi"]
        cost.append(c)
        for m in METRICS:
            t = arms.level(key, m)
            summary.append({"recipe": RECIPE_NAMES[key[0]], "budget": key[1], "metric": m.label, "runs": len(group),
                            "zoo_builds": c["zoo_builds"], "trainable_params": c["trainable_params"], "test": t["mean"],
                            "ci_lo": t["lo"], "ci_hi": t["hi"], "image_shuffled": arms.level(key, m, "shuffled")["mean"],
                            "text_prior": arms.level(key, m, "prior")["mean"], "val": arms.level(key, m, split="val")["mean"]})
    return pd.DataFrame(summary), pd.DataFrame(cost)


def described(arms: Arms) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(controls, comparisons), 95 % hierarchical intervals, not corrected: each arm minus its image-shuffled
    control and minus the text-only prior; the recipes compared pairwise at each budget on the runs both have."""
    controls, comps = [], []
    for key, m in itertools.product(ordered(arms.groups), METRICS):
        row = {"recipe": RECIPE_NAMES[key[0]], "budget": key[1], "metric": m.label}
        for part in ("shuffled", "prior"):
            d, lo, hi = cl.interval(arms.paired(key, None, m, part), 2000)
            row.update({f"minus_{part}": d, f"minus_{part}_lo": lo, f"minus_{part}_hi": hi})
        controls.append(row)
    for m, b in itertools.product(METRICS, BUDGETS):
        for r1, r2 in itertools.combinations(RECIPES, 2):
            if (r1, b) in arms.groups and (r2, b) in arms.groups:
                x = arms.paired((r1, b), (r2, b), m)
                d, lo, hi = cl.interval(x, 2000)
                comps.append({"metric": m.label, "budget": b, "a": RECIPE_NAMES[r1], "b": RECIPE_NAMES[r2], "a_minus_b": d,
                              "ci_lo": lo, "ci_hi": hi, "runs": len(x.builds), "zoo_builds": len(np.unique(x.builds))})
    return pd.DataFrame(controls), pd.DataFrame(comps)


def chosen_table(arms: Arms) -> pd.DataFrame:
    """Each recipe's budget chosen on *validation* per metric (test never enters; ties to the smaller), on the
    build both budgets ran on (0), reported on test on that build."""
    rows = []
    for m, r in itertools.product(METRICS, RECIPES):
        vals = {b: arms.level((r, b), m, split="val", builds={0})["mean"] for b in BUDGETS if (r, b) in arms.groups}
        if vals:
            b = max(vals, key=lambda k: (vals[k], -BUDGETS.index(k)))
            t = arms.level((r, b), m, builds={0})
            rows.append({"metric": m.label, "recipe": RECIPE_NAMES[r], "chosen_budget": b, "val": vals[b], "test": t["mean"],
                         "ci_lo": t["lo"], "ci_hi": t["hi"], "runs": t["runs"]})
    return pd.DataFrame(rows)


def degenerate(arms: Arms):
    """Per recipe, budget and task, counted per run, never on the mean over runs: runs that give one answer for
    DEGENERATE_SHARE of the test items (each run's `answer_concentration.csv`), the mean number of distinct answers
    beside the references' own, and (reports) runs whose test reports name no abnormal finding at all."""
    rows, test = [], arms.items["test"]
    report = next(m for m in METRICS if m.column is None)
    for key in ordered(arms.groups):
        frames = [pd.read_csv(a["dir"] / "answer_concentration.csv") for a in arms.groups[key]
                  if (a["dir"] / "answer_concentration.csv").exists()]
        if not frames:
            continue
        named = arms.scores(arms.groups[key], report)[..., :2].sum(axis=(1, 2))  # per run: true + false positives
        for task, g in pd.concat(frames).groupby("task", sort=False):
            refs = test.answer[test.task == task] if "answer" in test else pd.Series(dtype=str)
            rows.append({"recipe": RECIPE_NAMES[key[0]], "budget": key[1], "task": task,
                         "stuck_runs": int((g.top_answer_share >= DEGENERATE_SHARE).sum()), "runs": len(g),
                         "distinct_answers": float(g.distinct_answers.mean()), "top_answer_share": float(g.top_answer_share.mean()),
                         "reference_answers": int(refs.nunique()),
                         "no_abnormal_runs": int((named == 0).sum()) if task == "report" else np.nan})
    return pd.DataFrame(rows, columns=["recipe", "budget", "task", "stuck_runs", "runs", "distinct_answers", "top_answer_share",
                                       "reference_answers", "no_abnormal_runs"])


def aggregate(run_dirs: list[Path], out_dir: Path):
    """All finished arms -> `claims`, `summary`, `controls`, `comparisons`, `chosen`, `cost`, `degenerate`,
    `comparison.json`, `verdict.md` and the two figures."""
    arms = Arms(run_dirs)
    missing = [label((r, CLAIM_BUDGET)) for r in RECIPES if (r, CLAIM_BUDGET) not in arms.groups]
    if missing:
        raise ValueError(f"no finished arm {', '.join(missing)}: the claims cannot be tested")
    tested = test_claims(arms)
    (summary, cost), (controls, comps), chosen, stuck = summary_table(arms), described(arms), chosen_table(arms), degenerate(arms)
    out = Outputs(out_dir)
    write = out.table
    write("claims", claims_table(tested), "The claims' parts (`medlib.experiments.adaptation_results.CLAIMS`), one claim per "
          "task at the large budget: the task's own paper's recipe minus the other system on the same test items and runs. "
          "Intervals at the level Holm's procedure tests each part at, from a bootstrap over zoo builds, runs and studies; "
          "`p_sign_flip`: exact sign-flip test over the paired runs; `build_k`: the difference on build k alone; "
          "`detectable`: the interval's half-width. `word` is the claim's (`gate`: inconclusive when no arm beats the "
          "text-only prior).")
    write("summary", summary, "Test value per recipe, budget and metric (mean over builds of each build's mean over runs; 95 % "
          "interval over zoo builds, runs and studies), with the image-shuffled control, the text-only prior and the "
          "validation value.")
    write("controls", controls, "Each arm minus its image-shuffled control (`minus_shuffled`: the image-use gap) and minus "
          "the text-only prior, paired on the same test items: 95 % intervals over builds, runs and studies, not corrected.")
    write("comparisons", comps, "The recipes compared pairwise at each budget on the runs both have: 95 % intervals over "
          "builds, runs and studies, not corrected. They describe; the words rest on `claims` only.")
    write("chosen", chosen, "Each recipe's budget chosen on validation per metric, on zoo build 0 (both budgets ran on it), "
          "reported on test on that build.")
    write("cost", cost, "Cost per recipe and budget: trainable parameters; wall time per epoch (s) and peak memory (MB), "
          "mean over runs with a 95 % percentile bootstrap interval that resamples the runs (`_lo`/`_hi`).")
    write("degenerate", stuck, f"Answer concentration per recipe, budget and task on test: runs whose most common answer "
          f"is given for at least {DEGENERATE_SHARE:.0%} of the items (one answer for every image), of the runs; the mean "
          "number of distinct answers and the mean share of the most common one.")
    fileio.write_json(out_dir / "comparison.json", {"claims": [headline(t, summary) for t in tested.values()],
                                                    "notebook": "notebooks/04_adaptation_strategies.ipynb"})
    out.verdict(verdict(tested, summary, controls, comps, chosen, cost, stuck, arms.arms))
    _figures(summary, cost, out_dir)
    return summary


def headline(t: dict, summary) -> dict:
    """One claim in the words the front table prints (`front_line`), from the same parts as the verdict."""
    claim, m = t["claim"], PRIMARY[t["task"]]
    own = summary[(summary.recipe == claim.paper) & (summary.metric == m.label) & (summary.budget == CLAIM_BUDGET)].iloc[0]
    finds = (f"{claim.paper} {own.test:.3f} [{own.ci_lo:.3f}, {own.ci_hi:.3f}] over {int(own.runs)} runs on "
             f"{int(own.zoo_builds)} builds, text-only prior {own.text_prior:.3f}; " + "; ".join(cl.brief(t["results"])))
    return {"task": t["task"], "metric": m.label, "claim": claim.wording, "word": t["word"], "finds": finds, "gate": t["gate"]}


def verdict(tested, summary, controls, comps, chosen, cost, stuck, runs=()) -> str:
    lines = ["Computed by `medlib.experiments.adaptation_results.verdict` from `claims`, `summary`, `controls`, "
             f"`comparisons`, `chosen`, `cost` and `degenerate`. {provenance_line(runs)}", "",
             "**The claims** (one per task, written before the runs: on its own paper's task, that paper's recipe beats the "
             "other two at the large budget, about 300,000 trainable parameters each; tested on every run of the three "
             "recipes on three builds of the shared backbone):"]
    for t in tested.values():
        lines += ["", f"*{t['claim'].wording}*: **{t['word']}**."]
        lines += [f"- {cl.said(r)}." for r in t["results"]]
        lines.append(f"- **The word**: {t['word']}, because " + (t["gate"] if t["gate"] else cl.why(t["word"], t["results"])) + ".")
        if t["gate"] and cl.word(t["results"]) != t["word"]:
            lines.append(f"- Without that rule the parts alone would give *{cl.word(t['results'])}*, because "
                         f"{cl.why(cl.word(t['results']), t['results'])}; among arms that do not beat the text-only prior "
                         "that compares what each writes without the image, not how well it reads it.")
    lines += ["", "**Each arm against its controls** (`controls`, 95 % intervals, not corrected), per task's headline metric:"]
    for m in PRIMARY.values():
        rows = controls[controls.metric == m.label]
        lines.append(f"- {m.label}: " + "; ".join(
            f"{r.recipe} ({r.budget}) {r.minus_shuffled:+.3f} [{r.minus_shuffled_lo:+.3f}, {r.minus_shuffled_hi:+.3f}] over its "
            f"shuffled control, {r.minus_prior:+.3f} [{r.minus_prior_lo:+.3f}, {r.minus_prior_hi:+.3f}] over the prior"
            for r in rows.itertuples()) + ".")
    lines += ["", "**The small budget** (about 100,000 trainable parameters each; zoo build 0 only, so described, not a claim):"]
    for m in PRIMARY.values():
        rows = comps[(comps.metric == m.label) & (comps.budget == "small")]
        lines.append(f"- {m.label}: " + "; ".join(f"{r.a} minus {r.b} {r.a_minus_b:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]"
                                                  for r in rows.itertuples()) + ".")
    lines += ["", "**Degenerate behaviour** (measured per run, not averaged away):"]
    for task, g in stuck.groupby("task", sort=False) if len(stuck) else ():
        bad = g[g.stuck_runs > 0]
        named = "; ".join(f"{r.recipe} ({r.budget}) {r.stuck_runs} of {r.runs}" for r in bad.itertuples())
        lines.append(f"- {task}: runs giving one answer for at least {DEGENERATE_SHARE:.0%} of the test items: "
                     + (named if len(bad) else "none") + f" (distinct answers per run: {g.distinct_answers.min():.0f}"
                     f"-{g.distinct_answers.max():.0f}, against {g.reference_answers.max():.0f} distinct references).")
        if task == "report":
            silent = "; ".join(f"{r.recipe} ({r.budget}) {r.no_abnormal_runs:.0f} of {r.runs}" for r in g.itertuples())
            lines.append(f"- report: runs whose test reports name no abnormal finding at all: {silent}.")
    lines += ["", "**Each recipe at its budget chosen on validation** (build 0, test value):"]
    for m in PRIMARY.values():
        rows = chosen[chosen.metric == m.label]
        lines.append(f"- {m.label}: " + "; ".join(f"{r.recipe} {r.chosen_budget} {r.test:.3f} [{r.ci_lo:.3f}, {r.ci_hi:.3f}]"
                                                  for r in rows.itertuples()) + ".")
    lines += ["", "**Cost** (mean over runs, 95 % bootstrap interval over runs; wall time on this machine's CPU threads, "
              "peak memory of the whole process):"]
    for r in cost.itertuples():
        lines.append(f"- {r.recipe} ({r.budget}): {int(r.trainable_params):,} trainable parameters, {r.seconds_per_epoch:.1f} "
                     f"[{r.seconds_per_epoch_lo:.1f}, {r.seconds_per_epoch_hi:.1f}] s an epoch, peak {r.peak_memory_mb:.0f} MB.")
    return "\n".join(lines) + "\n"
def _figures(summary, cost, out_dir: Path) -> None:
    # imported here: heavy: figures only
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")  # set here: the style must not depend on which aggregation ran before in the process
    merged = summary.merge(cost[["recipe", "budget", "seconds_per_epoch", "seconds_per_epoch_lo", "seconds_per_epoch_hi"]],
                           on=["recipe", "budget"])
    for x, name, xlabel in (("trainable_params", "quality_vs_parameters", "budget: trainable parameters, summed over stages"),
                            ("seconds_per_epoch", "quality_vs_time", "wall time per epoch (s, 95 % interval over runs)")):
        fig = recipe_fronts(merged, [m.label for m in METRICS], [RECIPE_NAMES[r] for r in RECIPES], list(BUDGETS), x, xlabel,
                            "The three recipes on one backbone (large budget: 3 zoo builds; small: build 0); each line is a "
                            "recipe's front")
        write_figure(fig, out_dir / f"{name}.png", (summary, cost), dpi=90)
        plt.close(fig)


def front_line(results: Path, profile: str = "tiny") -> str | None:
    """The front table's sentence on the comparison, from `comparison.json` (None before it has run)."""
    path = Path(results) / "adaptation" / profile / "comparison.json"
    if not path.exists():
        return None
    c = json.loads(path.read_text())
    if "claims" not in c:  # written by an aggregation before the claims: say nothing rather than an old word
        return None
    parts = [f"{h['claim']}: **{h['word']}**" + (f", {h['gate']}" if h["gate"] else "") + f" ({h['finds']})"
             for h in c["claims"]]
    return ("**Which recipe wins its own paper's task** (the three recipes on one backbone, [notebook 04](../" + c["notebook"]
            + "), [verdict](adaptation/" + profile + "/verdict.md)): " + "; ".join(parts) + ".")
