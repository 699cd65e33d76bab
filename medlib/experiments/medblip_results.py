"""MedBLIP: the finished arms aggregated into tables, figures and the computed verdict (what
`medlib reproduce` and `medlib aggregate medblip` write beside the arms).

The claim is tested part by part on the framework of `medlib.claims`: each ratio runs on three builds of the
tiny zoo with three seeds each, every comparison is paired on the same test questions, and intervals resample
builds, then seeds, then test studies. Choices read validation only (the best other ratio); test is read once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medlib import claims as cl
from medlib import fileio
from medlib.experiments.aggregate import Outputs, ScoredArms, pair_runs, provenance_line, run_unit
from medlib.runs import load_arms
from medlib.tables import write_figure

PAPER_RATIO = 0.3125
NEIGHBOURS = (0.25, 0.375)


def _ratio(arm: dict) -> float:
    return float(arm["params"]["unfreeze_ratio"])


def pct(ratio: float) -> str:
    return f"{ratio * 100:g} %"


def _main(arm: dict) -> bool:
    """The ablation's own arms: MedBLIP's augmentation on, no conv stem."""
    return bool(arm["params"]["augment"]) and not bool(arm["params"]["conv_stem"])


CLAIM = cl.Claim(
    "medblip", "MedBLIP", "unfreezing part of the LLM's fully connected layers beats 0 % and 100 %; best at 31.25 %", (
        cl.Part("image", "31.25 % beats its image-shuffled control", "0.3125", "0.3125 with shuffled images", check=True),
        cl.Part("beats_0", "31.25 % beats 0 %", "0.3125", "0"),
        cl.Part("beats_100", "31.25 % beats 100 %", "0.3125", "1"),
        cl.Part("beats_best_other", "31.25 % beats the best other ratio on validation", "0.3125", "best other"),
        cl.Part("beats_25", "31.25 % beats 25 %", "0.3125", "0.25"),
        cl.Part("beats_375", "31.25 % beats 37.5 %", "0.3125", "0.375"),
    ))


def best_ratio(run_dirs: list[Path], exclude: tuple[float, ...] = ()) -> float:
    """The ratio with the highest mean *validation* ROUGE-L among the main arms, over all their runs (every
    ratio runs on the same builds and seeds); ties go to the smaller ratio (fewer trainable parameters).
    `exclude`: ratios not to choose (the paper's own, when choosing its strongest rival). Test never enters."""
    scores: dict[float, list[float]] = {}
    for a in load_arms(run_dirs):
        if _main(a) and "val" in a["train"]["metrics"] and _ratio(a) not in exclude:
            scores.setdefault(_ratio(a), []).append(a["train"]["metrics"]["val"]["rougeL"])
    if not scores:
        raise ValueError("no finished main arms (augment=True, conv_stem=False) with validation scores to choose a ratio from")
    means = {r: float(np.mean(v)) for r, v in scores.items()}
    top = max(means.values())
    return min(r for r, m in means.items() if m == top)


class Arms(ScoredArms):
    """The finished main arms by ratio, with their per-question scores read once and checked against the
    evaluation items. A run is one (zoo build, seed); two ratios are paired on the runs both have."""

    def __init__(self, run_dirs: list[Path]):
        super().__init__(run_dirs, "MedBLIP", _ratio, keep=_main)
        self.arms = sorted(self.arms, key=lambda a: (_ratio(a), *run_unit(a)))
        self.test = self.items["test"]
        self.studies = self.test.study.to_numpy()
        self.predictions = {}
        for a in self.arms:
            if (a["dir"] / "predictions.csv.gz").exists():
                p = pd.read_csv(a["dir"] / "predictions.csv.gz", keep_default_na=False)
                self.predictions[a["dir"]] = p[p.split == "test"].reset_index(drop=True)
        self.ratios = sorted({_ratio(a) for a in self.arms})

    def runs(self, ratio: float) -> list[dict]:
        return [a for a in self.arms if _ratio(a) == ratio]

    def scores(self, ratio: float, column: str = "rougeL") -> tuple[np.ndarray, np.ndarray, list]:
        """(runs x questions) of one per-sample column, each run's zoo build, and the runs' (build, seed)s, in that order."""
        runs = sorted(self.runs(ratio), key=run_unit)
        return (np.array([self.rows[a["dir"]]["test"][column].to_numpy(dtype=float) for a in runs]),
                np.array([run_unit(a)[0] for a in runs]), [run_unit(a) for a in runs])

    def paired(self, a: float, b: float | None, column: str = "rougeL", b_column: str | None = None,
               select: np.ndarray | None = None) -> cl.Paired:
        """Ratio `a` minus ratio `b` (or `a`'s own `b_column`) per question, on the runs both have."""
        runs_a, runs_b, builds = pair_runs(self.runs(a), None if b is None else self.runs(b),
                                           f"ratios {a:g} and {a if b is None else b:g}")
        x, y = (np.array([self.rows[r["dir"]]["test"][c].to_numpy(dtype=float) for r in runs])
                for runs, c in ((runs_a, column), (runs_b, b_column or column)))
        sel = slice(None) if select is None else select
        return cl.Paired(x[:, sel] - y[:, sel], builds, self.studies[sel])

    def level(self, ratio: float, column: str = "rougeL", select=None) -> dict:
        """One ratio's mean with the hierarchical interval (a difference to 0)."""
        x, builds, _ = self.scores(ratio, column)
        sel = slice(None) if select is None else select
        mean, lo, hi = cl.interval(cl.Paired(x[:, sel], builds, self.studies[sel]))
        return {"mean": mean, "lo": lo, "hi": hi}

    @property
    def closed(self) -> np.ndarray:
        return np.flatnonzero(self.test.answer.isin(["yes", "no"]).to_numpy())


def test_claim(arms: Arms, best_other: float) -> list[cl.PartResult]:
    """The claim's parts on ROUGE-L, every part paired on the runs both arms have."""
    against = {"beats_0": 0.0, "beats_100": 1.0, "beats_best_other": best_other, "beats_25": 0.25, "beats_375": 0.375}
    paired = {"image": arms.paired(PAPER_RATIO, None, "rougeL", "shuffled_rougeL")}
    paired.update({k: arms.paired(PAPER_RATIO, r) for k, r in against.items() if r in arms.ratios})
    claim = cl.Claim(CLAIM.key, CLAIM.paper, CLAIM.wording, tuple(
        p if p.key != "beats_best_other" else cl.Part(p.key, f"{p.wording} ({pct(best_other)})", p.a, f"{best_other:g}")
        for p in CLAIM.parts if p.key in paired))
    return cl.test_parts(claim, paired)


def plateau(arms: Arms) -> tuple[float, float, object]:
    """The ratios 31.25 % cannot be told from: each other ratio minus 31.25 % (95 % hierarchical interval, not
    corrected: a description, not a claim), and the contiguous range around 31.25 % whose intervals reach 0."""
    rows = []
    for r in arms.ratios:
        if r == PAPER_RATIO:
            rows.append({"unfreeze_ratio": r, "difference": 0.0, "ci_lo": 0.0, "ci_hi": 0.0, "separates": False})
            continue
        mean, lo, hi = cl.interval(arms.paired(r, PAPER_RATIO))
        rows.append({"unfreeze_ratio": r, "difference": mean, "ci_lo": lo, "ci_hi": hi, "separates": bool(lo > 0 or hi < 0)})
    table = pd.DataFrame(rows)
    k = arms.ratios.index(PAPER_RATIO)
    lo_k = hi_k = k
    while lo_k > 0 and not table.separates[lo_k - 1]:
        lo_k -= 1
    while hi_k < len(arms.ratios) - 1 and not table.separates[hi_k + 1]:
        hi_k += 1
    return arms.ratios[lo_k], arms.ratios[hi_k], table


def question_types(arms: Arms, ratio: float):
    """Per question type at `ratio`: how varied the answers are (distinct answers per run against the references'),
    the model minus the majority training answer to the same question (the question-string prior) and minus its
    image-shuffled self, on exact match with 95 % hierarchical intervals. No cut on a share: a type is named
    degenerate when its answers are no better than the majority answer."""
    rows = []
    for qt in dict.fromkeys(arms.test.question_type):
        sel = np.flatnonzero((arms.test.question_type == qt).to_numpy())
        distinct = [len(set(arms.predictions[a["dir"]].prediction.to_numpy()[sel])) for a in arms.runs(ratio)
                    if a["dir"] in arms.predictions]
        row = {"question_type": qt, "questions": len(sel), "distinct_references": arms.test.answer.iloc[sel].nunique(),
               "distinct_predictions_min": min(distinct, default=np.nan), "distinct_predictions_max": max(distinct, default=np.nan),
               "exact_match": float(arms.scores(ratio, "exact_match")[0][:, sel].mean())}
        for name, col in (("over_majority", "prior_exact_match"), ("over_shuffled", "shuffled_exact_match")):
            mean, lo, hi = cl.interval(arms.paired(ratio, None, "exact_match", col, select=sel))
            row.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
        row["answers"] = ("one answer for every image" if row["distinct_predictions_max"] == 1 else
                          "beat the majority answer" if row["over_majority_lo"] > 0 else
                          "no better than the majority answer")
        row["reads_image"] = bool(row["over_shuffled_lo"] > 0)
        rows.append(row)
    return pd.DataFrame(rows)


RESOLVERS = {"unfreeze_ratio": best_ratio}  # what a sweep's "best" stands for


def aggregate(run_dirs: list[Path], out_dir: Path):
    """All finished arms -> `summary`, `ratio_curve` (per build), `claim`, `plateau`, `question_types`,
    `presence_by_finding`, `linear_probe`, `verdict.md`, `headline.json` and the figures."""
    arms = Arms(run_dirs)
    out = Outputs(out_dir)
    write = out.table
    if PAPER_RATIO not in arms.ratios:
        raise ValueError(f"no finished arm at the paper's ratio {PAPER_RATIO:g}: the claim cannot be tested")
    best_other = best_ratio([a["dir"] for a in arms.arms], exclude=(PAPER_RATIO,))
    summary, curve = _summary(arms), _curve(arms)
    write("summary", summary, "MedBLIP arms on the test split, mean over runs (a run is one seed on one build of the tiny zoo); "
          "`_lo`/`_hi`: 95 % intervals from a bootstrap resampling zoo builds, seeds within builds and test studies; "
          "`val_rougeL`: validation ROUGE-L over the same runs, what the best other ratio is chosen on; `best_epoch`: the mean "
          "epoch early stopping kept; `runs_at_budget`: runs whose last check was their lowest (still improving); `shuffled_`: the same model with each test study given another study's image. Closed "
          "accuracy: the yes / no questions.")
    write("ratio_curve", curve, "Each zoo build's ratio curve: test ROUGE-L and validation ROUGE-L per ratio, mean over that "
          "build's seeds (what the figure draws beside the pooled curve).")
    results = test_claim(arms, best_other)
    write("claim", cl.table(results), "The claim's parts (`medlib.experiments.medblip_results.CLAIM`), ROUGE-L, 31.25 % minus "
          "the other arm on the same test questions. Intervals at the level Holm's procedure tests each part at, from a "
          "bootstrap over zoo builds, seeds and studies; `p_sign_flip`: exact sign-flip test over the paired runs; "
          "`build_k`: the difference on build k alone; `detectable`: the interval's half-width. A part holds when Holm "
          "rejects, the interval excludes 0 in the paper's direction and every build agrees (`medlib.claims`).")
    lo, hi, plateau_table = plateau(arms)
    write("plateau", plateau_table, "Each ratio minus 31.25 %, ROUGE-L, paired; 95 % intervals over builds, seeds and studies, "
          "not corrected (a description of the curve, not a claim).")
    types = question_types(arms, PAPER_RATIO) if arms.predictions else None
    if types is not None:
        write("question_types", types, "Per question type at 31.25 %: distinct answers per run against the references', exact "
              "match, and the model minus the majority training answer to the same question and minus its image-shuffled self, "
              "with 95 % intervals over builds, seeds and studies.")
    presence = _presence_table(arms, PAPER_RATIO)
    write("presence_by_finding", presence, "Accuracy on \"is there X?\" per finding at 31.25 % (mean over runs), for the model, "
          "the same model with shuffled images, and the question-string prior (0.5 by construction). `gap`: model minus shuffled.")
    _copy_probe(arms, out_dir, write)
    word = cl.word(results)
    out.verdict(verdict(summary, results, word, (lo, hi), types, presence, best_other, arms.arms),
                headline(summary, results, word, (lo, hi)))
    _figures(summary, curve, presence, out_dir)
    return summary


def _summary(arms: Arms):
    rows = []
    for r in arms.ratios:
        runs = arms.runs(r)
        row = {"unfreeze_ratio": r, "runs": len(runs), "zoo_builds": len({run_unit(a)[0] for a in runs}),
               "seeds": len({a["params"]["seed"] for a in runs}), "trainable_params": runs[0]["train"].get("trainable_params"),
               "val_rougeL": float(np.mean([a["train"]["metrics"]["val"]["rougeL"] for a in runs])),
               "best_epoch": float(np.mean([(a["train"].get("best_step") or 0) / a["train"]["steps_per_epoch"]
                                            if a["train"].get("steps_per_epoch") else np.nan for a in runs])),
               "max_epochs": max(int(a["params"].get("num_epochs") or 0) for a in runs),
               # the kept check was the last one: the validation loss was still falling when the budget ended
               "runs_at_budget": sum(bool(a["train"].get("val_curve")) and a["train"].get("best_step") == a["train"]["val_curve"][-1][0]
                                     for a in runs)}
        for name, col, sel in (("rougeL", "rougeL", None), ("closed_accuracy", "exact_match", arms.closed)):
            lv = arms.level(r, col, sel)
            row.update({name: lv["mean"], f"{name}_lo": lv["lo"], f"{name}_hi": lv["hi"]})
        row["shuffled_rougeL"] = float(arms.scores(r, "shuffled_rougeL")[0].mean())
        row["shuffled_closed_accuracy"] = float(arms.scores(r, "shuffled_exact_match")[0][:, arms.closed].mean())
        row["prior_rougeL"] = float(arms.scores(r, "prior_rougeL")[0][0].mean())
        row["minutes_per_arm"] = float(np.mean([a["duration_s"] for a in runs]) / 60)
        rows.append(row)
    return pd.DataFrame(rows)


def _curve(arms: Arms):
    rows = []
    for r in arms.ratios:
        x, builds, _ = arms.scores(r)
        for b in sorted(set(builds)):
            runs = [a for a in arms.runs(r) if run_unit(a)[0] == b]
            rows.append({"unfreeze_ratio": r, "zoo_seed": int(b), "seeds": len(runs), "rougeL": float(x[builds == b].mean()),
                         "val_rougeL": float(np.mean([a["train"]["metrics"]["val"]["rougeL"] for a in runs]))})
    return pd.DataFrame(rows)


def _presence_table(arms: Arms, ratio: float):
    test = arms.test
    sel = np.flatnonzero((test.question_type == "presence").to_numpy() & test.question.str.startswith("is there ").to_numpy())
    finding = test.question[sel].str[len("is there "):].str.rstrip("?").to_numpy()
    df = pd.DataFrame({"finding": finding, "model": arms.scores(ratio, "exact_match")[0][:, sel].mean(0),
                       "shuffled": arms.scores(ratio, "shuffled_exact_match")[0][:, sel].mean(0),
                       "prior": arms.scores(ratio, "prior_exact_match")[0][0][sel],
                       "yes": (test.answer.to_numpy()[sel] == "yes").astype(int)})
    out = df.groupby("finding").agg(questions=("model", "size"), yes=("yes", "sum"), model=("model", "mean"),
                                    shuffled=("shuffled", "mean"), prior=("prior", "mean")).reset_index()
    out["gap"] = out.model - out.shuffled
    return out.sort_values("questions", ascending=False).reset_index(drop=True)


def _copy_probe(arms: Arms, out_dir: Path, write) -> None:
    """The frozen ViT's linear probe (the same for every arm of a build) from the default arm."""
    probe = next((a["dir"] / "linear_probe.csv" for a in arms.runs(PAPER_RATIO)
                  if run_unit(a)[0] == 0 and (a["dir"] / "linear_probe.csv").exists()), None)
    if probe is None:
        return
    if probe.with_suffix(".png").exists():
        fileio.write_with(out_dir / "linear_probe.png", lambda p: p.write_bytes(probe.with_suffix(".png").read_bytes()))
    write("linear_probe", pd.read_csv(probe), "Linear probe of the frozen ViT of zoo build 0: per finding, validation AUC of a "
          "logistic regression on the mean patch token fit on the training studies. The ceiling of what any ratio can read.")


def headline(summary, results: list[cl.PartResult], word: str, plateau_range: tuple[float, float]) -> dict:
    """The row of the front table in results/README.md, from the same parts as the verdict."""
    b = summary[summary.unfreeze_ratio == PAPER_RATIO].iloc[0]
    parts = [f"31.25 %: test ROUGE-L {b.rougeL:.3f} [{b.rougeL_lo:.3f}, {b.rougeL_hi:.3f}] over {int(b.runs)} runs on "
             f"{int(b.zoo_builds)} zoo builds"] + cl.brief(results)
    at_budget = summary[summary.runs_at_budget > summary.runs / 2]
    if len(at_budget):
        parts.append(f"{len(at_budget)} of {len(summary)} ratios still improving in most runs when the {summary.max_epochs.max():g}-epoch "
                     "budget ended")
    lo, hi = plateau_range
    if lo != hi:
        parts.append(f"plateau from {pct(lo)} to {pct(hi)}")
    return {"paper": "MedBLIP", "claim": CLAIM.wording, "paper_number": "ROUGE-L 66.12 % at 31.25 % (Medical-Diff-VQA, OPT-2.7B)",
            "finds": "; ".join(parts), "reproduced": word, "notebook": "notebooks/01_medblip_unfreeze_ratio.ipynb",
            "figure": "rougeL_vs_ratio.png"}


def verdict(summary, results: list[cl.PartResult], word: str, plateau_range: tuple[float, float], types, presence,
            best_other: float, runs: list[dict] = ()) -> str:
    """What the numbers say, in words computed from them (so it cannot drift from the tables)."""
    b = summary[summary.unfreeze_ratio == PAPER_RATIO].iloc[0]
    lines = ["Computed by `medlib.experiments.medblip_results.verdict` from `summary`, `claim`, `plateau` and "
             f"`question_types`. {provenance_line(runs)}", "",
             f"**The paper's claim** ({CLAIM.wording}): **{word}**.", "",
             f"- 31.25 % on test: ROUGE-L {b.rougeL:.3f} [{b.rougeL_lo:.3f}, {b.rougeL_hi:.3f}], closed accuracy "
             f"{b.closed_accuracy:.3f} [{b.closed_accuracy_lo:.3f}, {b.closed_accuracy_hi:.3f}], {int(b.seeds)} seeds on each of "
             f"{int(b.zoo_builds)} zoo builds. The best other ratio on validation is {pct(best_other)}."]
    at_budget = summary[summary.runs_at_budget > 0]
    lines.append("- **Training to a plateau**: the epoch early stopping kept, mean over runs (`best_epoch`, at most "
                 f"{summary.max_epochs.max():g}): " + ", ".join(f"{pct(r.unfreeze_ratio)} {r.best_epoch:.2f}" for r in summary.itertuples())
                 + (". Every run stopped on a plateau." if at_budget.empty else
                    ". Still improving when the budget ended (the last check kept): " + ", ".join(
                        f"{pct(r.unfreeze_ratio)} in {r.runs_at_budget} of {r.runs} runs" for r in at_budget.itertuples())
                    + "; those ratios did not reach their plateau, and a larger budget could move the comparisons below."))
    below = summary[summary.rougeL < summary.prior_rougeL]
    if len(below):
        lines.append("- **Below the question-string prior** (the majority training answer to each question, test ROUGE-L "
                     f"{summary.prior_rougeL.iloc[0]:.3f}): " + ", ".join(f"{pct(r.unfreeze_ratio)} ({r.rougeL:.3f})" for r in below.itertuples())
                     + "; a part against such a ratio says what the budget let it learn, not what the ratio can reach.")
    lines += [f"- {cl.said(r)}." for r in results]
    if best_other in (0.25, 0.375):
        lines.append(f"- The best other ratio on validation is the neighbour {pct(best_other)}: two parts are one comparison, "
                     "and Holm counts it twice (conservative). The claim was written before the runs and is kept as written.")
    lo, hi = plateau_range
    lines.append(f"- **Plateau**: the ratios 31.25 % cannot be told from (95 % intervals, `plateau`) run from {pct(lo)} to {pct(hi)}."
                 if lo != hi else "- No neighbouring ratio is within the interval of 31.25 % (`plateau`).")
    lines.append(f"- **The word**: {word}, because {cl.why(word, results)}.")
    if types is not None:
        reads = types[types.reads_image].question_type.tolist()
        lines.append("- **Where the image is used**: the model beats its image-shuffled self on exact match for "
                     + (", ".join(f"`{t}`" for t in reads) if reads else "no question type") + " (`question_types`).")
        for r in types.itertuples():
            if r.answers != "beat the majority answer":
                lines.append(f"- **Degenerate answers**: `{r.question_type}` questions: {r.answers} "
                             f"({r.distinct_predictions_min:g}-{r.distinct_predictions_max:g} distinct answers per run against "
                             f"{r.distinct_references} in the references; model minus the majority answer {r.over_majority:+.3f} "
                             f"[{r.over_majority_lo:+.3f}, {r.over_majority_hi:+.3f}]).")
    read = presence[presence.gap > 0.1]
    lines.append(f"- Per finding (presence questions): the model beats its shuffled-image self by more than 0.1 on {len(read)} of "
                 f"{len(presence)} findings; see `presence_by_finding`.")
    lines.append("- The paper reports 66.12 % ROUGE-L at 31.25 % on Medical-Diff-VQA with OPT-2.7B and no per-ratio table; tiny "
                 "models on rendered images are comparable in the shape of the curve, not its level.")
    return "\n".join(lines) + "\n"


def _figures(summary, curve, presence, out_dir: Path) -> None:
    # imported here: heavy: figures only
    import matplotlib

    matplotlib.use("Agg")
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    s = summary.sort_values("unfreeze_ratio")
    x = s.unfreeze_ratio * 100
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    for b, g in curve.groupby("zoo_seed"):
        ax.plot(g.unfreeze_ratio * 100, g.rougeL * 100, "-", lw=0.8, alpha=0.6, color=f"C{4 + int(b)}", label=f"zoo build {b}")
    ax.plot(x, s.rougeL * 100, "o-", color="C0", lw=2, label="pooled (test, all builds and seeds)")
    ax.fill_between(x, s.rougeL_lo * 100, s.rougeL_hi * 100, color="C0", alpha=0.2, label="95 % interval (builds, seeds, studies)")
    ax.plot(x, s.shuffled_rougeL * 100, "s--", color="C1", label="same model, shuffled images")
    ax.axhline(s.prior_rougeL.iloc[0] * 100, color="0.3", ls="-.", lw=1, label="question-string prior")
    ax.plot(x, s.val_rougeL * 100, "^:", color="C2", label="validation")
    ax.set_ylabel("ROUGE-L (%)")
    ax.set_title("ROUGE-L per ratio")
    ax.legend(fontsize=7, loc="best")
    ax = axes[1]
    ax.plot(x, s.closed_accuracy * 100, "o-", color="C0", label="pooled (test)")
    ax.fill_between(x, s.closed_accuracy_lo * 100, s.closed_accuracy_hi * 100, color="C0", alpha=0.2)
    ax.plot(x, s.shuffled_closed_accuracy * 100, "s--", color="C1", label="same model, shuffled images")
    ax.axhline(50, color="0.3", ls="-.", lw=1, label="question-string prior (50 % by construction)")
    ax.set_ylabel("closed (yes / no) accuracy (%)")
    ax.set_title("closed accuracy per ratio")
    ax.legend(fontsize=7, loc="best")
    for ax in axes:
        ax.axvline(PAPER_RATIO * 100, color="C3", ls="--", lw=1)
        ax.set_xlabel("share of OPT decoder layers with fc1/fc2 unfrozen (%; dashed: the paper's 31.25 %)")
    fig.suptitle("MedBLIP unfreeze-ratio ablation (tiny profile, SynthCXR-IU VQA, test split)")
    write_figure(fig, out_dir / "rougeL_vs_ratio.png", (summary, curve))
    plt.close(fig)

    long = presence.melt(id_vars=["finding"], value_vars=["model", "shuffled", "prior"], var_name="system", value_name="accuracy")
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(presence) + 1.2))
    sns.barplot(data=long, y="finding", x="accuracy", hue="system", ax=ax, palette=["C0", "C1", "0.6"])
    ax.axvline(0.5, color="0.3", ls=":", lw=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy on 'is there X?' (test)")
    ax.set_title("'is there X?' accuracy per finding at 31.25 % (test)")
    ax.legend(fontsize=7, loc="lower right")
    write_figure(fig, out_dir / "presence_by_finding.png", presence)
    plt.close(fig)
