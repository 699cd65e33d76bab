"""MiniGPT-Med: the finished arms aggregated into tables, figures and the computed verdict (what
`medlib reproduce` and `medlib aggregate minigpt_med` write beside the arms).

Findings are reported in two kinds: position-fixed (anatomy sets the box, the label alone says where) and
position-variable (only the image says where); the claim that grounding reads the image rests on the
variable ones. The best arm is chosen on validation and reported on test; intervals resample test studies
and seeds together (`metrics.bootstrap.study_bootstrap`); comparisons are paired on the same findings, and
the claims one verdict tests are Holm-corrected together.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from medlib import fileio
from medlib.experiments.aggregate import ScoredArms
from medlib.metrics.bootstrap import holm, paired_study_bootstrap, study_bootstrap
from medlib.tables import write_figure, write_table

ALPHA = 0.05
SELECTION_SEEDS = (0, 1, 2)  # the seeds every arm runs with (experiments.SEEDS)
POSITIONS = ("variable", "fixed")
PARTS = {"test": "", "test_shuffled": "shuffled_", "test_prior": "prior_"}


def _key(arm: dict) -> tuple:
    p = arm["params"]
    # runs from before the grounding stage existed started from it in no sense; their run.json lacks the parameter
    return ("+".join(p["tasks"]), int(p["lora_r"]), bool(p["use_lora"]), bool(p["box_augment"]),
            bool(p.get("grounding_stage", True)))


def arm_label(key: tuple) -> str:
    tasks, r, lora, augment, grounded = key
    mixture = "full mixture" if tasks.count("+") == 4 else tasks.replace("+", ", ")
    return (f"{mixture}; " + (f"LoRA r={r}" if lora else "projection only (no LoRA)") + ("" if augment else "; no box augmentation")
            + ("" if grounded else "; no grounding stage"))


class Arms(ScoredArms):
    """The finished arms grouped by (tasks, lora_r, use_lora, box_augment, grounding_stage), with their per-finding
    scores as (seeds x findings) arrays."""

    def __init__(self, run_dirs: list[Path]):
        super().__init__(run_dirs, "MiniGPT-Med", _key)

    def index(self, position: str | None, split: str = "test") -> np.ndarray:
        items = self.items[split]
        return np.arange(len(items)) if position is None else np.flatnonzero((items.position == position).to_numpy())

    def scores(self, key: tuple, part: str = "test", metric: str = "iou_strict", position: str | None = None,
               seeds=None) -> np.ndarray:
        """(seeds x findings) of one metric; `part`: "test", "test_shuffled", "test_prior" or "val"."""
        split, prefix = ("val", "") if part == "val" else ("test", PARTS[part])
        runs = [a for a in self.groups[key] if seeds is None or a["params"]["seed"] in seeds]
        rows = np.array([self.rows[a["dir"]][split][prefix + metric].to_numpy(dtype=float) for a in runs])
        return rows[:, self.index(position, split)]

    def studies(self, position: str | None, split: str = "test") -> list:
        return self.items[split].study.to_numpy()[self.index(position, split)].tolist()


def best_arm(arms: Arms) -> tuple:
    """The arm with the highest mean *validation* strict IoU on position-variable findings, over the seeds
    every arm has (`SELECTION_SEEDS`); ties go to fewer trainable parameters. Test never enters the choice."""
    means = {}
    for key, group in arms.groups.items():
        val = arms.scores(key, "val", position="variable", seeds=SELECTION_SEEDS)
        if val.size:
            means[key] = (float(val.mean()), -(group[0]["train"].get("trainable_params") or 0))
    if not means:
        raise ValueError("no finished MiniGPT-Med arm has validation scores on position-variable findings to choose from")
    return max(means, key=means.get)


def _best_parameters(run_dirs: list[Path]) -> dict:
    """The parameters of `best_arm` that a sweep's "best" stands for (`RESOLVERS`)."""
    arms = Arms(run_dirs)
    return arms.groups[best_arm(arms)][0]["params"]


def best_tasks(run_dirs: list[Path]) -> list:
    return list(_best_parameters(run_dirs)["tasks"])


def best_lora_r(run_dirs: list[Path]) -> int:
    return int(_best_parameters(run_dirs)["lora_r"])


def best_use_lora(run_dirs: list[Path]) -> bool:
    return bool(_best_parameters(run_dirs)["use_lora"])


def best_box_augment(run_dirs: list[Path]) -> bool:
    return bool(_best_parameters(run_dirs)["box_augment"])


def best_grounding_stage(run_dirs: list[Path]) -> bool:
    return bool(_best_parameters(run_dirs).get("grounding_stage", True))


def _ci(values, studies) -> dict:
    return study_bootstrap(values, studies) if np.size(values) else {"mean": float("nan"), "lo": float("nan"), "hi": float("nan")}


def _compare(arms: Arms, claim: str, a: np.ndarray, b: np.ndarray, position: str) -> dict:
    d = paired_study_bootstrap(a, b, arms.studies(position))
    return {"claim": claim, "findings": f"position-{position}", "difference": d["diff"], "ci_lo": d["lo"], "ci_hi": d["hi"],
            "p": d["p"], "seeds": f"{d['seeds_a']} vs {d['seeds_b']}", "studies": d["studies"]}


RESOLVERS = {"tasks": best_tasks, "lora_r": best_lora_r, "use_lora": best_use_lora, "box_augment": best_box_augment,
             "grounding_stage": best_grounding_stage}  # what a sweep's "best" stands for


def aggregate(run_dirs: list[Path], out_dir: Path):
    """All finished arms -> `summary`, `baselines`, `claims` (paired, Holm-corrected), `iou_by_finding`,
    `linear_probe`, `verdict.md` and the figures."""
    arms = Arms(run_dirs)

    write = partial(write_table, out_dir)  # (name, frame, title)

    best = best_arm(arms)
    rows = []
    for key, group in sorted(arms.groups.items()):
        row = {"arm": arm_label(key), "seeds": len(group), "trainable_params": group[0]["train"].get("trainable_params"),
               "val_iou_variable": float(arms.scores(key, "val", position="variable").mean()), "chosen": key == best}
        for pos in (*POSITIONS, None):
            name = pos or "all"
            s = _ci(arms.scores(key, position=pos), arms.studies(pos))
            row.update({f"iou_{name}": s["mean"], f"iou_{name}_lo": s["lo"], f"iou_{name}_hi": s["hi"]})
        for pos in POSITIONS:
            for metric, short in (("acc_at_05", "acc05"), ("rsna_precision", "map")):
                # every finding has a reference box, so RSNA's image score is defined for each one
                s = _ci(arms.scores(key, metric=metric, position=pos), arms.studies(pos))
                row.update({f"{short}_{pos}": s["mean"], f"{short}_{pos}_lo": s["lo"], f"{short}_{pos}_hi": s["hi"]})
        row["iou_lenient"] = float(np.nanmean([a["train"]["metrics"]["grounding"]["iou_lenient"] for a in group]))
        shuffled = arms.scores(key, "test_shuffled", position="variable")
        row["shuffled_iou_variable"] = float(shuffled.mean()) if shuffled.size else float("nan")  # none in a small split
        row["malformed_share"] = float(arms.scores(key, metric="malformed").mean())
        row["minutes_per_arm"] = float(np.mean([a["duration_s"] for a in group]) / 60)
        rows.append(row)
    summary = pd.DataFrame(rows)
    write("summary", summary, "MiniGPT-Med grounding arms on the test split (tiny profile): mean over seeds of strict IoU per kind "
          "of finding (`variable`: position-variable, `fixed`: position-fixed, `all`), Acc@0.5 (`acc05_`) and RSNA-style mAP "
          "over IoU 0.40-0.75 (`map_`, per finding then averaged); `_lo`/`_hi` are 95 % intervals from a "
          "bootstrap that resamples test studies and seeds together; `val_iou_variable` (validation) is what the best arm is "
          "chosen on (`chosen`); `shuffled_` is the same model asked about another test study's image; `iou_lenient` is "
          "MiniGPT-Med's own (unparsable answers dropped, each box scored by its best match).")

    baselines = _baselines(arms, best)
    write("baselines", baselines, f"The chosen arm ({arm_label(best)}) against the controls, scored exactly as the model on the "
          "same test findings: the label prior (each label's typical training box set, no image) and the image-shuffled "
          "control (the same model, another test study's image). Intervals as in `summary`.")

    prior = {pos: arms.scores(best, "test_prior", position=pos)[:1] for pos in POSITIONS}  # no seed: every run holds the same
    claims = []
    for pos in POSITIONS:
        model = arms.scores(best, position=pos)
        if not model.size:
            continue
        claims.append(_compare(arms, "best - label prior", model, prior[pos], pos))
        claims.append(_compare(arms, "best - image-shuffled control", model, arms.scores(best, "test_shuffled", position=pos), pos))
    for other in sorted(k for k in arms.groups if k != best):
        claims.append(_compare(arms, f"best - {arm_label(other)}", arms.scores(best, position="variable"),
                               arms.scores(other, position="variable"), "variable"))
    claims = pd.DataFrame(claims)
    claims["p_holm"] = holm(claims.p)
    claims["holds"] = (claims.p_holm < ALPHA) & (claims.ci_lo > 0)
    write("claims", claims, "Paired differences of strict IoU on the same test findings (first minus second), 95 % intervals from a "
          "bootstrap over test studies and seeds (seed k beside seed k where both have the same seeds); two-sided p from the "
          "same resamples, Holm-corrected over all rows (`p_holm`). `holds`: above 0 after correction.")

    by_finding = _by_finding(arms, best)
    write("iou_by_finding", by_finding, f"Strict IoU per finding on test, chosen arm ({arm_label(best)}; mean over seeds, interval "
          "over studies and seeds), beside the label prior and the image-shuffled control.")
    probe = next((a["dir"] / "linear_probe.csv" for a in arms.groups[best] if (a["dir"] / "linear_probe.csv").exists()), None)
    if probe is not None:
        if probe.with_suffix(".png").exists():
            fileio.write_with(out_dir / "linear_probe.png", lambda p: p.write_bytes(probe.with_suffix(".png").read_bytes()))
        write("linear_probe", pd.read_csv(probe), "Linear probe of the frozen EVA ViT (the same for every arm): per finding, "
              "validation AUC of a logistic regression on the mean patch feature fit on the training studies: the ceiling "
              "of what the projection and LoRA can read.")
    where = next((pd.read_csv(a["dir"] / "where_probe.csv") for a in arms.groups[best] if (a["dir"] / "where_probe.csv").exists()), None)
    if where is not None:
        write("where_probe", where, "Can the frozen EVA see *where* (the same for every arm)? Per label, a logistic regression on "
              "the patch tokens of the training findings; on each held-out position-variable finding, the within-image AUC of "
              "its patch scores for the finding's own patches beside the label's training frequency map, and the strict IoU of "
              "the label's training box set it scores highest beside the label prior (paired, study-resampled 95 % intervals).")
    fileio.write_text(out_dir / "verdict.md", verdict(summary, baselines, claims, best, by_finding, where))
    fileio.write_text(out_dir / "headline.json", json.dumps(headline(summary, claims), indent=1) + "\n")
    _figures(summary, baselines, by_finding, out_dir)
    return summary


def _baselines(arms: Arms, best: tuple):
    rows = []
    for system, part in (("model (chosen arm)", "test"), ("image-shuffled control", "test_shuffled"), ("label prior", "test_prior")):
        row = {"system": system}
        for pos in (*POSITIONS, None):
            name = pos or "all"
            scores = arms.scores(best, part, position=pos)
            scores = scores[:1] if part == "test_prior" else scores
            s = _ci(scores, arms.studies(pos))
            acc = arms.scores(best, part, "acc_at_05", position=pos)
            row.update({f"iou_{name}": s["mean"], f"iou_{name}_lo": s["lo"], f"iou_{name}_hi": s["hi"],
                        f"acc_at_05_{name}": float(acc.mean()) if acc.size else float("nan")})
        rows.append(row)
    return pd.DataFrame(rows)


def _by_finding(arms: Arms, best: tuple):
    test = arms.items["test"]
    rows = []
    for label in sorted(test.label.unique()):
        idx = np.flatnonzero((test.label == label).to_numpy())
        studies = test.study.to_numpy()[idx].tolist()
        row = {"finding": label, "position": test.position.iloc[idx[0]], "test_findings": len(idx)}
        for name, part in (("model", "test"), ("shuffled", "test_shuffled"), ("prior", "test_prior")):
            scores = arms.scores(best, part)[:, idx]
            s = _ci(scores[:1] if part == "test_prior" else scores, studies)
            row.update({name: s["mean"], f"{name}_lo": s["lo"], f"{name}_hi": s["hi"]})
        rows.append(row)
    out = pd.DataFrame(rows)
    out["gap_to_prior"] = out.model - out.prior
    return out.sort_values(["position", "test_findings"], ascending=[False, False]).reset_index(drop=True)


def headline(summary, claims) -> dict:
    """The row of the front table in results/README.md, computed from the same tables as the verdict: the
    chosen arm on position-variable findings against the label prior and the image-shuffled control;
    reproduced yes when it beats both with paired intervals above 0, partly when one, no when neither."""
    b = summary[summary.chosen].iloc[0]
    parts = [f"best arm on validation ({b.arm}): position-variable strict IoU {b.iou_variable:.3f} "
             f"[{b.iou_variable_lo:.3f}, {b.iou_variable_hi:.3f}]"]
    beaten = []
    for what in ("label prior", "image-shuffled control"):
        r = claims[(claims.claim == f"best - {what}") & (claims.findings == "position-variable")]
        if len(r):
            r = r.iloc[0]
            beaten.append(bool(r.holds))
            parts.append(f"minus the {what}: {r.difference:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]")
    word = "not tested" if not beaten else ("yes" if all(beaten) else ("partly" if any(beaten) else "no"))
    return {"paper": "MiniGPT-Med", "claim": "disease grounding (boxes written as text) read from the image",
            "paper_number": "IoU 0.26 (RSNA, lenient, 7B)", "finds": "; ".join(parts),
            "state": f"beats {sum(beaten)} of {len(beaten)} controls on position-variable findings", "reproduced": word,
            "notebook": "notebooks/03_minigpt_med_grounding.ipynb", "figure": "iou_by_finding.png"}


def verdict(summary, baselines, claims, best: tuple, by_finding, where=None) -> str:
    """What the numbers say, in words computed from them (so it cannot drift from the tables)."""
    def said(r):
        return f"{r.difference:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}], Holm p = {r.p_holm:.3g}"

    b = summary[summary.chosen].iloc[0]
    lines = ["Computed by `medlib.experiments.minigpt_med_results.verdict` from `summary`, `baselines`, `claims` and "
             "`iou_by_finding`.", "",
             f"- **Best arm, chosen on validation** (position-variable strict IoU): {b.arm} ({int(b.seeds)} seeds). Test strict "
             f"IoU on position-variable findings {b.iou_variable:.3f} [{b.iou_variable_lo:.3f}, {b.iou_variable_hi:.3f}] "
             f"(Acc@0.5 {b.acc05_variable:.3f} [{b.acc05_variable_lo:.3f}, {b.acc05_variable_hi:.3f}], RSNA mAP "
             f"{b.map_variable:.3f} [{b.map_variable_lo:.3f}, {b.map_variable_hi:.3f}]), on position-fixed findings "
             f"{b.iou_fixed:.3f} [{b.iou_fixed_lo:.3f}, {b.iou_fixed_hi:.3f}] (Acc@0.5 {b.acc05_fixed:.3f}, RSNA mAP "
             f"{b.map_fixed:.3f})."]
    target = []
    for pos in POSITIONS:
        for what in ("label prior", "image-shuffled control"):
            r = claims[(claims.claim == f"best - {what}") & (claims.findings == f"position-{pos}")]
            if r.empty:
                continue
            r = r.iloc[0]
            if pos == "variable":
                target.append(bool(r.holds))
            lines.append(f"- Best minus the {what}, position-{pos} findings: {said(r)}: "
                         + ("above 0" if r.holds else "NOT above 0") + (
                             (", the target holds." if r.holds else ": the target is not met.") if pos == "variable" else
                             " (position-fixed: the label alone says where, so this shows no reading of the image)."))
    met = bool(target) and all(target)
    enough = int(b.seeds) >= 5
    lines.append(f"- **Does grounding come from the image?** {'Yes' if met else 'Not shown'}: " + (
        "on position-variable findings the chosen arm beats both the label prior and the image-shuffled control after correction"
        + ("." if enough else f", but over {int(b.seeds)} seeds only (the target asks for 5).") if met else
        "on position-variable findings the chosen arm does not beat both the label prior and the image-shuffled control "
        "with intervals above 0; the position-fixed scores, however high, come from the label. What was tried to reach "
        "it, each judged on validation, is listed in `docs/papers.md` (MiniGPT-Med)."))
    if where is not None and (where.split == "test").any():
        w = where[where.split == "test"].iloc[0]
        sees = w.auc_gap_lo > 0
        lines.append(f"- **Does the frozen EVA see where?** {'Yes' if sees else 'Not shown'}: a linear probe on its patch tokens "
                     f"ranks a position-variable finding's own patches with within-image AUC {w.probe_auc:.3f}, the label's "
                     f"frequency map {w.frequency_auc:.3f} (gap {w.auc_gap:+.3f} [{w.auc_gap_lo:+.3f}, {w.auc_gap_hi:+.3f}], "
                     f"test); the training box set it picks scores strict IoU {w.probe_iou:.3f} against the label prior's "
                     f"{w.prior_iou:.3f} ({w.iou_gap:+.3f} [{w.iou_gap_lo:+.3f}, {w.iou_gap_hi:+.3f}]); see `where_probe`.")
    var = by_finding[by_finding.position == "variable"]
    read = var[var.model_lo > var.prior_hi]
    lines.append(f"- Per finding (position-variable): the model's interval lies above the label prior's on {len(read)} of "
                 f"{len(var)} findings" + (f" ({', '.join(read.finding)})" if len(read) else "") + "; see `iou_by_finding`.")
    for r in claims[claims.claim.str.startswith("best - ") & ~claims.claim.isin(["best - label prior", "best - image-shuffled control"])].itertuples():
        state = "better" if r.holds else ("worse" if r.p_holm < ALPHA and r.ci_hi < 0 else "not told apart")
        lines.append(f"- {r.claim} (position-variable): {said(r)}: {state}.")
    lines.append(f"- The paper's lenient IoU (unparsable answers dropped, each box scored by its best match) for the chosen arm: "
                 f"{b.iou_lenient:.3f}, against strict {b.iou_all:.3f} over all findings; the paper reports 0.26 on RSNA with "
                 "a 7B model on real images, not comparable in level.")
    one_seed = summary[summary.seeds < 2]
    if len(one_seed):
        lines.append(f"- {len(one_seed)} arm(s) ran with one seed only; their intervals hold the study spread, not the seed spread.")
    lines.append("- One zoo build only: the intervals hold the seed and study spread, not the spread between builds of the tiny zoo.")
    return "\n".join(lines) + "\n"


def _figures(summary, baselines, by_finding, out_dir: Path) -> None:
    # imported here: heavy: figures only
    import matplotlib

    matplotlib.use("Agg")
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    prior = baselines[baselines.system == "label prior"].iloc[0]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(summary) + 2.2), sharey=True)
    y = np.arange(len(summary))
    for ax, pos in zip(axes, POSITIONS):
        m = summary[f"iou_{pos}"]
        ax.errorbar(m, y, xerr=[m - summary[f"iou_{pos}_lo"], summary[f"iou_{pos}_hi"] - m], fmt="o", color="C0",
                    label="model (test; 95 % interval over studies x seeds)")
        if pos == "variable":
            ax.plot(summary.shuffled_iou_variable, y, "s", color="C1", label="same model, shuffled images")
        ax.axvline(prior[f"iou_{pos}"], color="0.3", ls="-.", lw=1, label="label prior (no image)")
        ax.set_xlabel("strict IoU")
        ax.set_title(f"position-{pos} findings")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=7, loc="best")  # the fixed panel's points sit where "lower right" would cover them
    axes[0].set_yticks(y, [f"{a}{' (chosen)' if c else ''}\n{int(s)} seeds" for a, c, s in zip(summary.arm, summary.chosen, summary.seeds)],
                       fontsize=8)
    axes[0].set_ylabel("arm")
    fig.suptitle("MiniGPT-Med grounding arms (tiny profile, SynthCXR-IU, test split)")
    fig.tight_layout()
    write_figure(fig, out_dir / "iou_by_arm.png", (summary, baselines))
    plt.close(fig)

    heights = [max(2.0, 0.32 * (by_finding.position == pos).sum() + 1.2) for pos in POSITIONS]
    fig, axes = plt.subplots(2, 1, figsize=(7.5, sum(heights)), gridspec_kw={"height_ratios": heights})
    for ax, pos in zip(axes, POSITIONS):
        part = by_finding[by_finding.position == pos].reset_index(drop=True)
        yy = np.arange(len(part))
        for k, (name, color, label) in enumerate((("model", "C0", "model (chosen arm)"), ("shuffled", "C1", "image-shuffled control"),
                                                  ("prior", "0.45", "label prior"))):
            ax.errorbar(part[name], yy + (k - 1) * 0.25, xerr=[part[name] - part[f"{name}_lo"], part[f"{name}_hi"] - part[name]],
                        fmt="o", ms=4, color=color, label=label)
        ax.set_yticks(yy, [f"{f} (n={n})" for f, n in zip(part.finding, part.test_findings)], fontsize=8)
        ax.invert_yaxis()
        ax.set_ylabel("finding (test boxes)")
        ax.set_xlim(0, 1)
        ax.set_xlabel("strict IoU (test; 95 % interval over studies x seeds)")
        ax.set_title(f"position-{pos} findings")
        ax.legend(fontsize=7, loc="best")  # the fixed panel's points sit where "lower right" would cover them
    fig.tight_layout()
    write_figure(fig, out_dir / "iou_by_finding.png", by_finding)
    plt.close(fig)
