"""MiniGPT-Med: the finished arms aggregated into tables, figures and the computed verdict (what
`medlib reproduce` and `medlib aggregate minigpt_med` write beside the arms).

Findings are reported in two kinds: position-fixed (anatomy sets the box, the label alone says where) and
position-variable (only the image says where); the claim rests on the variable ones. It is tested part by part on
the claims framework (`medlib.claims`, docs/claims.md), on three zoo builds: the arm fine-tuned from the zoo's
general grounding stage (normal anatomy, no finding label: MiniGPT-v2's checkpoint in small) beats the label prior
and its image-shuffled control, and its fine-tuning adds over that starting checkpoint evaluated as it is. The
other arms (the in-domain grounding stage, no stage, the projection alone, no box augmentation, the full mixture)
are described beside the claim, each against the claim's arm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medlib import claims as cl
from medlib import fileio
from medlib.experiments.aggregate import Outputs, ScoredArms, pair_runs, provenance_line, run_unit
from medlib.tables import write_figure

POSITIONS = ("variable", "fixed")
HEADLINE = "iou_strict"  # on position-variable findings
GROUNDING = "detection+refer+identify"
STARTS = {"general": "the general grounding stage (normal anatomy of the pre-training renders, no finding label)",
          "in-domain": "the in-domain grounding stage (the tested findings of the pre-training renders)",
          "none": "no grounding stage (the text-only LLaMA, a fresh projection)"}  # zoo.minigpt_med.STARTS, without torch
PREFIX = {"model": "", "shuffled": "shuffled_", "prior": "prior_"}


def system(start: str = "general", zero_shot: bool = False, use_lora: bool = True, box_augment: bool = True,
           tasks: str = GROUNDING, lora_r: int = 64) -> tuple:
    """An arm's key: what makes it (`_key`)."""
    return tasks, lora_r, use_lora, box_augment, start, zero_shot


PAPER_ARM = system()
ZERO_SHOT = system(zero_shot=True)

# Written before the runs that decide it. The paper reports a level (IoU 0.26 on RSNA), no paired effect: no paper_effect.
CLAIM = cl.Claim("minigpt_med", "MiniGPT-Med",
                 "disease grounding, boxes written as text, read from the image and learnt by MiniGPT-Med's fine-tuning", (
                     cl.Part("beats_prior", "fine-tuned beats the label prior", "fine-tuned", "label prior", HEADLINE),
                     cl.Part("image", "fine-tuned beats its image-shuffled control", "fine-tuned",
                             "fine-tuned, image-shuffled", HEADLINE),
                     cl.Part("fine_tuning_adds", "fine-tuning adds over its starting checkpoint", "fine-tuned",
                             "the general grounding stage, zero-shot", HEADLINE),
                 ))
# part -> (arm a, arm b or None for a's own answers under `condition`, condition of b)
PAIRS = {"beats_prior": (PAPER_ARM, None, "prior"), "image": (PAPER_ARM, None, "shuffled"),
         "fine_tuning_adds": (PAPER_ARM, ZERO_SHOT, "model")}


def _key(arm: dict) -> tuple:
    p = arm["params"]
    return system(str(p["grounding_stage"]), bool(p["zero_shot"]), bool(p["use_lora"]), bool(p["box_augment"]),
                  "+".join(p["tasks"]), int(p["lora_r"]))


def is_zero_shot(key: tuple) -> bool:
    """Whether the arm `key` names evaluates a starting point as it is (`system`'s last field)."""
    return key[-1]


def system_name(key: tuple) -> str:
    tasks, r, lora, augment, start, zero_shot = key
    if zero_shot:
        return f"{start} grounding stage as it is (zero-shot)"
    mixture = "full mixture" if tasks.count("+") == 4 else "grounding tasks"
    return (f"{mixture} from {start if start != 'none' else 'no'} grounding stage; "
            + (f"LoRA r={r}" if lora else "projection only") + ("" if augment else "; no box augmentation"))


class Arms(ScoredArms):
    """The finished arms grouped by `_key`, with their per-finding scores (model, image-shuffled, label prior)."""

    def __init__(self, run_dirs):
        super().__init__(run_dirs, "MiniGPT-Med", _key)
        self.where = {s: np.flatnonzero((self.items[s].position == "variable").to_numpy()) for s in self.splits}

    def arms_of(self, key) -> list[dict]:
        return self.groups.get(key, [])

    def index(self, position: str | None, split: str = "test") -> np.ndarray:
        items = self.items[split]
        return np.arange(len(items)) if position is None else np.flatnonzero((items.position == position).to_numpy())

    def studies(self, position: str | None = "variable", split: str = "test") -> np.ndarray:
        return self.items[split].study.to_numpy()[self.index(position, split)]

    def scores(self, arms, condition="model", metric=HEADLINE, split="test", position="variable") -> np.ndarray:
        """(runs x findings) of one metric."""
        rows = np.array([self.rows[a["dir"]][split][PREFIX[condition] + metric].to_numpy(dtype=float) for a in arms])
        return rows[:, self.index(position, split)]

    def level(self, arms, condition="model", metric=HEADLINE, position="variable") -> dict:
        """The metric over the arms' runs (each build's mean of its runs, then the mean over builds) with a 95 %
        interval from the hierarchical bootstrap (builds, runs within builds, studies)."""
        x = self.scores(arms, condition, metric, position=position)
        if not x.size or np.isnan(x).any():
            return {"value": np.nan, "lo": np.nan, "hi": np.nan}
        mean, lo, hi = cl.interval(cl.Paired(x, np.array([run_unit(a)[0] for a in arms]), self.studies(position)), 2000)
        return {"value": mean, "lo": lo, "hi": hi}

    def paired(self, a_key, b_key=None, condition="model", metric=HEADLINE) -> cl.Paired:
        """Arm `a_key` minus arm `b_key` (or `a_key`'s own answers under `condition`) on the same test findings, on
        the runs both have. A zero-shot arm trains nothing and decodes greedily: its one run on a build stands for
        every seed of that build."""
        a, b, builds = pair_runs(self.arms_of(a_key), None if b_key is None else self.arms_of(b_key),
                                 f"{system_name(a_key)} and {system_name(b_key or a_key)}",
                                 one_per_build=b_key is not None and is_zero_shot(b_key))
        return cl.Paired(self.scores(a) - self.scores(b, condition), builds, self.studies())


RESOLVERS: dict = {}  # no MiniGPT-Med sweep asks for "best": the claim's arms are named before the runs


def test_claim(arms: Arms) -> list[cl.PartResult]:
    """The claim's parts, each paired on the runs both arms have, Holm-corrected together."""
    return cl.test_parts(CLAIM, {p.key: arms.paired(*PAIRS[p.key][:2], PAIRS[p.key][2]) for p in CLAIM.parts})


def summary_table(arms: Arms) -> pd.DataFrame:
    """One row per arm, then the label prior: strict IoU per kind of finding and on all, Acc@0.5 and RSNA mAP on
    position-variable findings, the image-shuffled control, the validation score, answers that hold no box, cost."""
    rows = []
    order = sorted(arms.groups, key=lambda k: (k != PAPER_ARM, k != ZERO_SHOT, k[4] != "general", k[5], system_name(k)))
    for key in order:
        group = arms.arms_of(key)
        row = {"system": system_name(key), "start": key[4], "zero_shot": key[5], "runs": len(group),
               "zoo_builds": len({run_unit(a)[0] for a in group}), "trainable_params": group[0]["train"].get("trainable_params")}
        for pos in (*POSITIONS, None):
            e = arms.level(group, position=pos)
            row.update({f"iou_{pos or 'all'}": e["value"], f"iou_{pos or 'all'}_lo": e["lo"], f"iou_{pos or 'all'}_hi": e["hi"]})
        for metric, short in (("acc_at_05", "acc05"), ("rsna_precision", "map")):
            row[f"{short}_variable"] = float(arms.scores(group, metric=metric).mean())
        e = arms.level(group, "shuffled")
        row.update({"shuffled_iou_variable": e["value"], "shuffled_iou_variable_lo": e["lo"], "shuffled_iou_variable_hi": e["hi"]})
        row["val_iou_variable"] = float(arms.scores(group, split="val").mean())
        row["malformed_share"] = float(arms.scores(group, metric="malformed", position=None).mean())
        row["iou_lenient"] = float(pd.Series([a["train"]["metrics"]["grounding"]["iou_lenient"] for a in group], dtype=float).mean())
        row["anatomy_iou"] = float(pd.Series([a["train"]["metrics"].get("anatomy", {}).get("iou_strict") for a in group],
                                             dtype=float).mean())  # zero-shot arms: the stage's own task, held out
        row["minutes_per_arm"] = float(np.mean([a["duration_s"] for a in group]) / 60)
        rows.append(row)
    prior = {"system": "label prior (no image)", "runs": 0}
    for pos in (*POSITIONS, None):
        e = arms.level(arms.arms_of(PAPER_ARM)[:1] or arms.arms[:1], "prior", position=pos)  # the same in every run
        prior.update({f"iou_{pos or 'all'}": e["value"], f"iou_{pos or 'all'}_lo": e["lo"], f"iou_{pos or 'all'}_hi": e["hi"]})
    return pd.DataFrame(rows + [prior])


def described(arms: Arms) -> pd.DataFrame:
    """Every other arm minus the claim's arm on the same test findings and runs (build 0 for most), and each arm minus
    the label prior: 95 % intervals over zoo builds, runs and studies, not corrected."""
    rows = []
    for key in sorted(arms.groups, key=system_name):
        for b, cond, what in ((PAPER_ARM, "model", "minus the claim's arm"), (None, "prior", "minus the label prior")):
            if (b == key) or (b is not None and not arms.arms_of(b)):
                continue
            try:
                x = arms.paired(key, b, cond)
            except ValueError:  # no run in common (a build the claim's arm has not run on)
                continue
            mean, lo, hi = cl.interval(x)
            rows.append({"system": system_name(key), "against": what, "difference": mean, "ci_lo": lo, "ci_hi": hi,
                         "runs": len(x.builds), "zoo_builds": len(np.unique(x.builds))})
    return pd.DataFrame(rows)


def by_finding(arms: Arms, key: tuple = PAPER_ARM) -> pd.DataFrame:
    """Strict IoU per finding on test for one arm, beside the label prior and its image-shuffled control."""
    test, group = arms.items["test"], arms.arms_of(key)
    builds = np.array([run_unit(a)[0] for a in group])
    rows = []
    for label in sorted(test.label.unique()):
        idx = np.flatnonzero((test.label == label).to_numpy())
        row = {"finding": label, "position": test.position.iloc[idx[0]], "test_findings": len(idx)}
        for name in PREFIX:
            x = arms.scores(group, name, position=None)[:, idx]
            mean, lo, hi = cl.interval(cl.Paired(x, builds, test.study.to_numpy()[idx]), 1000)
            row.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
        rows.append(row)
    out = pd.DataFrame(rows)
    out["gap_to_prior"] = out.model - out.prior
    return out.sort_values(["position", "test_findings"], ascending=[False, False]).reset_index(drop=True)


def aggregate(run_dirs, out_dir: Path):
    """All finished arms -> `summary`, `claim`, `described`, `iou_by_finding`, `linear_probe`, `where_probe`,
    `verdict.md`, `headline.json` and the figures."""
    arms = Arms(run_dirs)
    for key in (PAPER_ARM, ZERO_SHOT):
        if not arms.arms_of(key):
            raise ValueError(f"no finished arm '{system_name(key)}': the paper's claim cannot be tested")
    summary, results, desc, finding = summary_table(arms), test_claim(arms), described(arms), by_finding(arms)
    out = Outputs(out_dir)
    write = out.table
    write("summary", summary, "MiniGPT-Med grounding on the test split (tiny profile), mean over runs (a run is one seed on one "
          "build of the tiny zoo): strict IoU per kind of finding (`variable`: position-variable, `fixed`: position-fixed, "
          "`all`), `_lo`/`_hi` 95 % intervals from a bootstrap resampling zoo builds, runs within builds and test studies; "
          "Acc@0.5 (`acc05_`) and RSNA-style mAP (`map_`) on position-variable findings; `shuffled_` is the same model asked "
          "about another test study's image; `val_iou_variable` is validation; `malformed_share` the answers that hold no "
          "box; `iou_lenient` is MiniGPT-Med's own (unparsable answers dropped, each box scored by its best match); "
          "`anatomy_iou` (zero-shot arms): strict IoU of `[detection]` of each normal structure in the test images, what a "
          "grounding stage was trained on, on studies it never saw. The last "
          "row is the label prior: each label's typical training box set, no image.")
    write("claim", cl.table(results), "The claim's parts (`medlib.experiments.minigpt_med_results.CLAIM`) on strict IoU over "
          "position-variable test findings, the arm fine-tuned from the general grounding stage minus the other system on the "
          "same findings. Intervals at the level Holm's procedure tests each part at, from a bootstrap over zoo builds, runs "
          "and studies; `p_sign_flip`: exact sign-flip test over the paired runs; `build_k`: the difference on build k alone; "
          "`detectable`: the interval's half-width. A part holds when Holm rejects, the interval excludes 0 in the paper's "
          "direction and every build agrees (`medlib.claims`).")
    if len(desc):
        write("described", desc, "Every arm minus the claim's arm and minus the label prior, strict IoU on position-variable "
              "test findings, on the runs both have: 95 % intervals over zoo builds, runs and studies, not corrected. These "
              "rows describe; the word rests on `claim` only.")
    write("iou_by_finding", finding, f"Strict IoU per finding on test, {system_name(PAPER_ARM)} (mean over runs, interval over "
          "builds, runs and studies), beside the label prior and its image-shuffled control.")
    where = _probes(arms, out_dir, write)
    word = cl.word(results)
    out.verdict(verdict(summary, results, desc, finding, word, where, arms.arms), headline(summary, results, word))
    _figures(summary, finding, out_dir)
    return summary


def _probes(arms: Arms, out_dir: Path, write):
    """The encoder's probes (the same for every arm on a build): copied from the claim's arm on build 0."""
    first = [a for a in arms.arms_of(PAPER_ARM) if run_unit(a)[0] == 0][:1] or arms.arms_of(PAPER_ARM)[:1]
    folder = first[0]["dir"]
    if (folder / "linear_probe.csv").exists():
        if (folder / "linear_probe.png").exists():
            fileio.write_with(out_dir / "linear_probe.png", lambda p: p.write_bytes((folder / "linear_probe.png").read_bytes()))
        write("linear_probe", pd.read_csv(folder / "linear_probe.csv"), "Linear probe of the frozen EVA ViT (zoo build 0): per "
              "finding, validation AUC of a logistic regression on the mean patch feature fit on the training studies.")
    if not (folder / "where_probe.csv").exists():
        return None
    where = pd.read_csv(folder / "where_probe.csv")
    write("where_probe", where, "Can the frozen EVA see *where* (zoo build 0)? Per label, a logistic regression on the patch "
          "tokens of the training findings; on each held-out position-variable finding, the within-image AUC of its patch "
          "scores beside the label's training frequency map, and the strict IoU of the training box set it scores highest "
          "beside the label prior (paired, study-resampled 95 % intervals).")
    return where


def _ci(r, k: str) -> str:
    return f"{r[k]:.3f} [{r[f'{k}_lo']:.3f}, {r[f'{k}_hi']:.3f}]"


def rests_on(summary, results: list[cl.PartResult]) -> str:
    """What the word rests on when the fine-tuned arm does not beat the label prior: the parts that hold would also
    hold for a model that learnt only where each label usually lies. Empty when it beats the prior."""
    by = {r.part.key: r for r in results}
    prior, adds = by.get("beats_prior"), by.get("fine_tuning_adds")
    if prior is None or prior.holds or adds is None:
        return ""
    s = summary.set_index("system")
    gain = s.loc["label prior (no image)", "iou_variable"] - s.loc[system_name(ZERO_SHOT), "iou_variable"]
    lean = "below" if prior.difference < 0 else "above"
    return (f"the fine-tuned arm does not beat the label prior, and lies {lean} it ({prior.difference:+.3f}; per build "
            f"{', '.join(f'{v:+.3f}' for v in prior.by_build)}). The label prior alone adds {gain:+.3f} over the starting "
            f"checkpoint, {'more than' if gain >= adds.difference else 'less than'} fine-tuning does ({adds.difference:+.3f}): "
            "what holds does not show disease grounding beyond where each label usually lies")


def headline(summary, results: list[cl.PartResult], word: str) -> dict:
    """The row of the front table in results/README.md, from the same parts as the verdict."""
    by = summary.set_index("system")
    b = by.loc[system_name(PAPER_ARM)]
    parts = [f"fine-tuned from {STARTS['general']}: position-variable strict IoU {_ci(b, 'iou_variable')} over {int(b.runs)} "
             f"runs on {int(b.zoo_builds)} zoo build{'s' if b.zoo_builds != 1 else ''}; label prior {by.loc['label prior (no image)', 'iou_variable']:.3f}; "
             f"the starting checkpoint as it is {by.loc[system_name(ZERO_SHOT), 'iou_variable']:.3f}"] + cl.brief(results)
    caveat = rests_on(summary, results)
    if caveat:
        parts.append(caveat)
    return {"paper": "MiniGPT-Med", "claim": CLAIM.wording, "paper_number": "IoU 0.26 (RSNA, lenient, 7B)",
            "finds": "; ".join(parts), "reproduced": word, "notebook": "notebooks/03_minigpt_med_grounding.ipynb",
            "figure": "iou_by_arm.png"}


def verdict(summary, results: list[cl.PartResult], desc, finding, word: str, where=None, runs=()) -> str:
    """What the numbers say, in words computed from them (so the words cannot drift from the tables)."""
    by = summary.set_index("system")
    b, z = by.loc[system_name(PAPER_ARM)], by.loc[system_name(ZERO_SHOT)]
    prior = by.loc["label prior (no image)"]
    lines = ["Computed by `medlib.experiments.minigpt_med_results.verdict` from `summary`, `claim`, `described` and "
             f"`iou_by_finding`. {provenance_line(runs)}", "",
             f"**The paper's claim** ({CLAIM.wording}): **{word}**.", "",
             f"- **Starting checkpoint**: {STARTS['general']}, the stand-in for MiniGPT-v2's checkpoint, which learnt to "
             "ground objects of natural images before MiniGPT-Med taught it diseases; no finding label enters it.",
             f"- Fine-tuned from it ({system_name(PAPER_ARM)}), on test: position-variable strict IoU {_ci(b, 'iou_variable')}, "
             f"position-fixed {_ci(b, 'iou_fixed')}, {int(b.runs)} runs on {int(b.zoo_builds)} zoo build{'s' if b.zoo_builds != 1 else ''}; the label prior "
             f"{prior.iou_variable:.3f} and {prior.iou_fixed:.3f}; the starting checkpoint as it is {z.iou_variable:.3f} and "
             f"{z.iou_fixed:.3f} ({z.malformed_share:.0%} of its answers hold no box)" + (
                 f"; on its own task, the normal anatomy of the test images, it scores strict IoU {z.anatomy_iou:.3f}."
                 if "anatomy_iou" in z and not np.isnan(z.anatomy_iou) else ".")]
    lines += [f"- {cl.said(r)}." for r in results]
    lines.append(f"- **The word**: {word}, because {cl.why(word, results)}.")
    caveat = rests_on(summary, results)
    if caveat:
        lines.append(f"- **What the word rests on**: {caveat}.")
    for r in desc.itertuples() if len(desc) else ():
        lines.append(f"- Described: {r.system} {r.against}: {r.difference:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}] "
                     f"({r.runs} run{'s' if r.runs != 1 else ''} on {r.zoo_builds} build{'s' if r.zoo_builds != 1 else ''}).")
    if where is not None and (where.split == "test").any():
        w = where[where.split == "test"].iloc[0]
        lines.append(f"- **Does the frozen EVA see where?** {'Yes' if w.auc_gap_lo > 0 else 'Not shown'}: a linear probe on its "
                     f"patch tokens ranks a position-variable finding's own patches with within-image AUC {w.probe_auc:.3f}, the "
                     f"label's frequency map {w.frequency_auc:.3f} (gap {w.auc_gap:+.3f} [{w.auc_gap_lo:+.3f}, {w.auc_gap_hi:+.3f}], "
                     f"test, build 0); see `where_probe`.")
    var = finding[finding.position == "variable"]
    read = var[var.model_lo > var.prior_hi]
    lines.append(f"- Per finding (position-variable): the fine-tuned arm's interval lies above the label prior's on {len(read)} "
                 f"of {len(var)} findings" + (f" ({', '.join(read.finding)})" if len(read) else "") + "; see `iou_by_finding`.")
    lines.append(f"- The paper's lenient IoU (unparsable answers dropped, each box scored by its best match) for the claim's arm: "
                 f"{b.iou_lenient:.3f}, against strict {b.iou_all:.3f} over all findings; the paper reports 0.26 on RSNA with a "
                 "7B model on real images, not comparable in level.")
    return "\n".join(lines) + "\n"


def _figures(summary, finding, out_dir: Path) -> None:
    # imported here: heavy: figures only
    import matplotlib

    matplotlib.use("Agg")
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    arms, prior = summary[summary.runs > 0].reset_index(drop=True), summary[summary.runs == 0].iloc[0]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(arms) + 2.2), sharey=True)
    y = np.arange(len(arms))
    for ax, pos in zip(axes, POSITIONS):
        m = arms[f"iou_{pos}"]
        ax.errorbar(m, y, xerr=[m - arms[f"iou_{pos}_lo"], arms[f"iou_{pos}_hi"] - m], fmt="o", color="C0",
                    label="model (test; 95 % interval over builds, runs, studies)")
        if pos == "variable":
            ax.plot(arms.shuffled_iou_variable, y, "s", color="C1", label="same model, shuffled images")
        ax.axvline(prior[f"iou_{pos}"], color="0.3", ls="-.", lw=1, label="label prior (no image)")
        ax.set_xlabel("strict IoU")
        ax.set_title(f"position-{pos} findings")
        ax.set_xlim(0, 1)
        ax.legend(fontsize=7, loc="best")
    axes[0].set_yticks(y, [f"{a}\n{int(r)} runs, {int(b)} build{'s' if b != 1 else ''}"
                           for a, r, b in zip(arms.system, arms.runs, arms.zoo_builds)], fontsize=8)
    axes[0].set_ylabel("arm")
    fig.suptitle("MiniGPT-Med grounding arms (tiny profile, SynthCXR-IU, test split); the claim's arm first")
    fig.tight_layout()
    write_figure(fig, out_dir / "iou_by_arm.png", summary)
    plt.close(fig)

    heights = [max(2.0, 0.32 * (finding.position == pos).sum() + 1.2) for pos in POSITIONS]
    fig, axes = plt.subplots(2, 1, figsize=(7.5, sum(heights)), gridspec_kw={"height_ratios": heights})
    for ax, pos in zip(axes, POSITIONS):
        part = finding[finding.position == pos].reset_index(drop=True)
        yy = np.arange(len(part))
        for k, (name, color, label) in enumerate((("model", "C0", "fine-tuned (the claim's arm)"),
                                                  ("shuffled", "C1", "image-shuffled control"), ("prior", "0.45", "label prior"))):
            ax.errorbar(part[name], yy + (k - 1) * 0.25, xerr=[part[name] - part[f"{name}_lo"], part[f"{name}_hi"] - part[name]],
                        fmt="o", ms=4, color=color, label=label)
        ax.set_yticks(yy, [f"{f} (n={n})" for f, n in zip(part.finding, part.test_findings)], fontsize=8)
        ax.invert_yaxis()
        ax.set_ylabel("finding (test boxes)")
        ax.set_xlim(0, 1)
        ax.set_xlabel("strict IoU (test; 95 % interval over builds, runs, studies)")
        ax.set_title(f"position-{pos} findings")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    write_figure(fig, out_dir / "iou_by_finding.png", finding)
    plt.close(fig)
