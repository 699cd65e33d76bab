"""MedBLIP: the finished arms aggregated into tables, figures and the computed verdict (what
`medlib reproduce` and `medlib aggregate medblip` write beside the arms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medlib import fileio
from medlib.experiments.medblip import QUESTION_TYPES
from medlib.metrics.bootstrap import paired_bootstrap
from medlib.runs import load_arms, to_markdown

# -- aggregation over arms ------------------------------------------------------------------

def best_ratio(run_dirs: list[Path]) -> float:
    """The ratio with the highest mean ROUGE-L over seeds among the main arms (augment on, no stem)."""
    # imported here: heavy: tables only
    import pandas as pd

    rows = [{"ratio": a["params"]["unfreeze_ratio"], "rougeL": a["train"]["metrics"]["rougeL"]} for a in load_arms(run_dirs)
            if a["params"]["augment"] and not a["params"]["conv_stem"]]
    if not rows:
        raise ValueError("no finished main arms (augment=True, conv_stem=False) to pick the best ratio from")
    return float(pd.DataFrame(rows).groupby("ratio").rougeL.mean().idxmax())


def aggregate(run_dirs: list[Path], out_dir: Path):
    """All finished arms -> tables (`arms`, `summary`, `baselines`, `rougeL_by_question_type`,
    `axes_paired_bootstrap`) and the ROUGE-L vs ratio figure."""
    # imported here: heavy: figures only; heavy: tables only
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt
    import seaborn as sns

    arms = load_arms(run_dirs)
    rows = []
    for a in arms:
        p, m = a["params"], a["train"]["metrics"]
        rows.append({"unfreeze_ratio": p["unfreeze_ratio"], "augment": p["augment"], "conv_stem": p["conv_stem"], "seed": p["seed"],
                     "trainable_params": a["train"].get("trainable_params"), "duration_s": a["duration_s"],
                     **{k: v for k, v in m.items() if isinstance(v, (int, float))},
                     "blank_rougeL": m["baseline_blank"]["rougeL"], "majority_rougeL": m["baseline_majority"]["rougeL"],
                     "run": a["dir"].name})
    df = pd.DataFrame(rows).sort_values(["augment", "conv_stem", "unfreeze_ratio", "seed"])
    fileio.write_text(out_dir / "arms.csv", df.to_csv(index=False))

    def write(name, frame, title):
        fileio.write_text(out_dir / f"{name}.csv", frame.to_csv(index=False))
        fileio.write_text(out_dir / f"{name}.md", f"{title}\n\n" + to_markdown(frame))

    keys = ["augment", "conv_stem", "unfreeze_ratio"]
    summary = df.groupby(keys).agg(
        seeds=("seed", "nunique"), trainable_params=("trainable_params", "first"),
        rougeL=("rougeL", "mean"), rougeL_sd=("rougeL", "std"), rougeL_ci_lo=("rougeL_lo", "mean"), rougeL_ci_hi=("rougeL_hi", "mean"),
        rouge1=("rouge1", "mean"), rouge2=("rouge2", "mean"), bleu1=("bleu1", "mean"), bleu4=("bleu4", "mean"),
        closed_accuracy=("closed_accuracy", "mean"), closed_accuracy_sd=("closed_accuracy", "std"),
        minutes_per_arm=("duration_s", lambda x: x.mean() / 60)).reset_index()
    write("summary", summary, "MedBLIP arms: mean over seeds; `_sd` is the spread over seeds; `rougeL_ci_lo/hi` is the "
          "mean of the seeds' 95 % bootstrap intervals over test questions.")
    qt_cols = [c for c in df if c.startswith("rougeL_") and c[7:] in QUESTION_TYPES]
    write("rougeL_by_question_type", df.groupby(keys)[qt_cols].mean().reset_index(), "ROUGE-L per question type (mean over seeds).")

    main = df[df.augment & ~df.conv_stem]
    best = float(main.groupby("unfreeze_ratio").rougeL.mean().idxmax()) if not main.empty else None
    if best is not None:
        b = main[main.unfreeze_ratio == best]
        base = pd.DataFrame([
            {"system": f"MedBLIP fine-tuned, ratio {best:g}", "rougeL": b.rougeL.mean(), "ci_lo": b.rougeL_lo.mean(), "ci_hi": b.rougeL_hi.mean(),
             "closed_accuracy": b.closed_accuracy.mean()},
            {"system": "same model, blank images", "rougeL": b.blank_rougeL.mean(),
             "ci_lo": np.mean([a["train"]["metrics"]["baseline_blank"]["rougeL_lo"] for a in arms if _is(a, best, True, False)]),
             "ci_hi": np.mean([a["train"]["metrics"]["baseline_blank"]["rougeL_hi"] for a in arms if _is(a, best, True, False)]),
             "closed_accuracy": np.mean([a["train"]["metrics"]["baseline_blank"]["closed_accuracy"] for a in arms if _is(a, best, True, False)])},
            {"system": "most frequent answer per question type", "rougeL": b.majority_rougeL.mean(),
             "ci_lo": np.mean([a["train"]["metrics"]["baseline_majority"]["rougeL_lo"] for a in arms if _is(a, best, True, False)]),
             "ci_hi": np.mean([a["train"]["metrics"]["baseline_majority"]["rougeL_hi"] for a in arms if _is(a, best, True, False)]),
             "closed_accuracy": np.mean([a["train"]["metrics"]["baseline_majority"]["closed_accuracy"] for a in arms if _is(a, best, True, False)])},
        ])
        write("baselines", base, f"The best ratio ({best:g}, highest mean ROUGE-L over seeds) against the baselines; intervals are "
              "95 % bootstrap intervals over test questions, averaged over seeds.")
        fileio.write_text(out_dir / "verdict.md", verdict(base, summary, best))
        # Paired differences on the same test questions, pooled over seeds.
        diffs = []
        for axis, other in (("augment off", dict(augment=False, conv_stem=False)), ("conv stem on", dict(augment=True, conv_stem=True))):
            xs, ys = [], []
            for a in arms:
                if _is(a, best, True, False):
                    twin = next((t for t in arms if _is(t, best, other["augment"], other["conv_stem"])
                                 and t["params"]["seed"] == a["params"]["seed"]), None)
                    if twin is not None:
                        xs += twin["train"]["per_sample"]["rougeL"]
                        ys += a["train"]["per_sample"]["rougeL"]
            if xs:
                d = paired_bootstrap(xs, ys)
                diffs.append({"change at the best ratio": axis, "rougeL difference": d["diff"], "ci_lo": d["lo"], "ci_hi": d["hi"],
                              "pairs": d["n"]})
        if diffs:
            write("axes_paired_bootstrap", pd.DataFrame(diffs), "ROUGE-L of the changed arm minus the main arm (augmentation on, no "
                  "conv stem) on the same test questions, pooled over seeds; paired bootstrap 95 % interval.")

    if main.empty:
        return summary
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    g = main.groupby("unfreeze_ratio")
    mean, lo, hi = g.rougeL.mean(), g.rougeL_lo.mean(), g.rougeL_hi.mean()
    ax.plot(mean.index * 100, mean.values * 100, "o-", color="C0", label="ROUGE-L (mean over seeds)")
    ax.fill_between(mean.index * 100, lo.values * 100, hi.values * 100, color="C0", alpha=0.2, label="95% bootstrap CI")
    ax.axhline(g.blank_rougeL.mean().mean() * 100, color="0.5", ls=":", lw=1, label="blank images")
    ax.axhline(g.majority_rougeL.mean().mean() * 100, color="0.3", ls="-.", lw=1, label="majority answer")
    ax.axvline(31.25, color="C3", ls="--", lw=1)
    ax.text(32, ax.get_ylim()[0] + 0.03 * np.ptp(ax.get_ylim()), "paper's best: 31.25%", color="C3", fontsize=8)
    ax.set_xlabel("share of OPT decoder layers with fc1/fc2 unfrozen (%)")
    ax.set_ylabel("ROUGE-L (%)")
    ax2 = ax.twinx()
    tp = g.trainable_params.first()
    ax2.plot(tp.index * 100, tp.values / 1e3, "s:", color="C2", label="trainable parameters")
    ax2.set_ylabel("trainable parameters (thousands)", color="C2")
    ax2.grid(False)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=7)
    ax.set_title("MedBLIP unfreeze-ratio ablation (tiny profile, SynthCXR-IU VQA)")
    fileio.write_with(out_dir / "rougeL_vs_ratio.png", lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return summary


def verdict(base, summary, best: float) -> str:
    """What the numbers say, in words, computed from them (so it cannot drift from the tables)."""
    model, blank, major = (base.iloc[i] for i in range(3))
    lines = ["Computed by `medlib.experiments.medblip_results.verdict` from the tables above.", ""]
    for name, b in (("the blank-image baseline", blank), ("the majority-answer baseline", major)):
        clear = model.ci_lo > b.ci_hi
        lines.append(f"- The best arm (ratio {best:g}, ROUGE-L {model.rougeL:.3f} [{model.ci_lo:.3f}, {model.ci_hi:.3f}]) "
                     f"{'beats' if clear else 'does NOT clearly beat'} {name} ({b.rougeL:.3f} [{b.ci_lo:.3f}, {b.ci_hi:.3f}])"
                     f"{' with non-overlapping intervals' if clear else ': the intervals overlap'}.")
    main = summary[summary.augment & ~summary.conv_stem].sort_values("unfreeze_ratio")
    spread = main.rougeL.max() - main.rougeL.min()
    lines.append(f"- Across ratios the mean ROUGE-L spans {spread:.3f}; the typical seed spread is {main.rougeL_sd.mean():.3f} and "
                 f"each arm's interval is about {(main.rougeL_ci_hi - main.rougeL_ci_lo).mean():.3f} wide, so "
                 f"{'the ratios are not distinguishable from one another' if spread < (main.rougeL_ci_hi - main.rougeL_ci_lo).mean() / 2 else 'some ratios differ beyond their intervals'}.")
    paper = main[np.isclose(main.unfreeze_ratio, 0.3125)]
    if not paper.empty:
        lines.append(f"- The paper's 31.25 % scores {paper.rougeL.iloc[0]:.3f} here; the paper reports 66.12 % ROUGE-L on "
                     "Medical-Diff-VQA with OPT-2.7B, which these tiny models on rendered images cannot be compared with directly.")
    if not (model.ci_lo > blank.ci_hi):
        lines.append("- Until the best arm beats the blank-image baseline, read the ratio curve as a demonstration of the "
                     "method, not as evidence for or against any ratio: the answers come mostly from the question.")
    return "\n".join(lines) + "\n"


def _is(arm: dict, ratio: float, augment: bool, conv_stem: bool) -> bool:
    p = arm["params"]
    return p["unfreeze_ratio"] == ratio and p["augment"] == augment and p["conv_stem"] == conv_stem
