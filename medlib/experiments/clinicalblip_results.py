"""ClinicalBLIP: the finished arms aggregated into tables, figures and the computed verdict (what
`medlib reproduce` and `medlib aggregate clinicalblip` write beside the arms).

The headline is CE-F1 over the 13 abnormal observations (the normal report scores 0 there). Before the
stage and prior comparison is read, two gates: the oracle-leak arm must write the findings it is given
(the sanity check of the generator), and the best arm, chosen on validation, must name findings and beat
the most common training report and the image-shuffled control. Intervals resample test studies and seeds
together; comparisons are paired on the same reports; the claims are Holm-corrected together.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from medlib import fileio
from medlib.metrics.bootstrap import (
    holm,
    paired_study_bootstrap,
    paired_study_count_bootstrap,
    study_bootstrap,
    study_count_bootstrap,
)
from medlib.metrics.clinical import ABNORMAL, FINDINGS, FIVE, OBSERVATIONS, label_matrix, names_finding
from medlib.models import clinicalblip as cb
from medlib.runs import scored_arms
from medlib.tables import to_markdown, write_figure, write_table

ALPHA = 0.05
SELECTION_SEEDS = (0, 1, 2)  # the seeds every fine-tuned arm runs with (experiments.SEEDS)
HEADLINE = "ce13_micro_f1"
# The leak arm "writes the findings it is given" when it names a finding in this band of the reference share.
NEAR_REFERENCE = (0.5, 1.5)
MIN_SHARE = 0.5  # the best arm names findings in at least this share of the reference's
PRIORS = ("none", "indication+checklist")
MEANS = ("meteor", "meteor_nltk", "rougeL", "bert_sim")  # per-report scores: their mean is the metric


def _f1(tot, micro: bool):
    """Micro or macro F1 of summed (..., observations, [tp, fp, fn]) counts, vectorised over the leading axis;
    macro over the observations present in the references (tp + fn > 0)."""
    tp, fp, fn = tot[..., 0], tot[..., 1], tot[..., 2]
    if micro:
        tp, fp, fn = tp.sum(-1), fp.sum(-1), fn.sum(-1)
        return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    f = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    present = (tp + fn) > 0
    return (f * present).sum(-1) / np.maximum(present.sum(-1), 1)


def _share(tot):
    return tot[..., 0] / np.maximum(tot[..., 1], 1)


# metric -> (observations, statistic of their summed counts)
STATISTICS = {
    "ce13_micro_f1": (ABNORMAL, lambda t: _f1(t, True)), "ce13_macro_f1": (ABNORMAL, lambda t: _f1(t, False)),
    "ce5_micro_f1": (FIVE, lambda t: _f1(t, True)), "ce5_macro_f1": (FIVE, lambda t: _f1(t, False)),
    "ce_micro_f1": (OBSERVATIONS, lambda t: _f1(t, True)), "abnormal_share": (FINDINGS, _share),
}


def _matrix(strings) -> np.ndarray:
    return np.array([[int(c) for c in s] for s in strings], dtype=int).reshape(len(strings), len(OBSERVATIONS))


def counts(pred_labels: np.ndarray, gold: np.ndarray, metric: str) -> np.ndarray:
    """Per report, what `metric`'s statistic sums: (reports, observations, [tp, fp, fn]), or for
    `abnormal_share` (reports, [names a finding, 1])."""
    obs, _ = STATISTICS[metric]
    idx = [OBSERVATIONS.index(o) for o in obs]
    p, g = pred_labels[..., idx], gold[..., idx]
    if metric == "abnormal_share":
        named = p.any(-1).astype(float)
        return np.stack([named, np.ones_like(named)], -1)
    return np.stack([p & g, p & (1 - g), (1 - p) & g], -1).astype(float)


class Arms:
    """The finished arms grouped by (stages, prior), with their per-report scores and labels per split and
    condition (model, image_shuffled, common, retrieval) as (seeds x reports) arrays."""

    def __init__(self, run_dirs):
        self.arms, items = scored_arms(run_dirs, "ClinicalBLIP")
        self.gold = {split: _matrix(items[items.split == split].reference_labels.astype(str).str.zfill(len(OBSERVATIONS)).tolist())
                     for split in ("val", "test")}
        self.ids = {split: items[items.split == split].id.tolist() for split in ("val", "test")}
        self.rows = {}
        for a in self.arms:
            rows = pd.read_csv(a["dir"] / "per_sample.csv.gz", keep_default_na=False, na_values=[""], dtype={"labels": str})
            self.rows[a["dir"]] = {}
            for (split, cond), part in rows.groupby(["split", "condition"]):
                if len(part) != len(self.ids[split]):
                    raise ValueError(f"{a['dir']}: {len(part)} {split} {cond} reports, but the evaluation items list "
                                     f"{len(self.ids[split])}; re-run it")
                self.rows[a["dir"]][split, cond] = part.reset_index(drop=True)
        self.groups: dict[tuple, list[dict]] = {}
        for a in sorted(self.arms, key=lambda a: a["params"]["seed"]):
            self.groups.setdefault((a["params"]["stages"], a["params"]["prior"]), []).append(a)

    def arms_of(self, key, seeds=None) -> list[dict]:
        return [a for a in self.groups.get(key, []) if seeds is None or a["params"]["seed"] in seeds]

    def labels(self, arms, split="test", condition="model") -> np.ndarray:
        """(seeds, reports, 14) labels of the reports the arms wrote."""
        return np.stack([_matrix(self.rows[a["dir"]][split, condition]["labels"].str.zfill(len(OBSERVATIONS)).tolist()) for a in arms])

    def scores(self, arms, metric, split="test", condition="model") -> np.ndarray:
        return np.stack([self.rows[a["dir"]][split, condition][metric].to_numpy(float) for a in arms])

    def counts(self, arms, metric, split="test", condition="model") -> np.ndarray:
        return counts(self.labels(arms, split, condition), self.gold[split][None], metric)

    def estimate(self, arms, metric, split="test", condition="model") -> dict:
        """{value, lo, hi} of `metric` over the arms' seeds, studies and seeds resampled."""
        if metric in STATISTICS:
            return study_count_bootstrap(self.counts(arms, metric, split, condition), STATISTICS[metric][1])
        r = study_bootstrap(self.scores(arms, metric, split, condition), self.ids[split])
        return {"value": r["mean"], "lo": r["lo"], "hi": r["hi"]}

    def paired(self, a_arms, b_arms, metric, a_condition="model", b_condition="model") -> dict:
        """a minus b on the same test reports, paired: {diff, lo, hi, p}."""
        if metric in STATISTICS:
            return paired_study_count_bootstrap(self.counts(a_arms, metric, "test", a_condition),
                                                self.counts(b_arms, metric, "test", b_condition), STATISTICS[metric][1])
        return paired_study_bootstrap(self.scores(a_arms, metric, "test", a_condition), self.scores(b_arms, metric, "test", b_condition),
                                      self.ids["test"])

    def best(self) -> tuple:
        """The fine-tuned (stages, prior) with the highest validation abnormal-only CE-F1 over the selection seeds."""
        tuned = [k for k in self.groups if k[0] != "zero-shot" and k[1] in PRIORS and self.arms_of(k, SELECTION_SEEDS)]
        if not tuned:
            raise ValueError("no finished fine-tuned ClinicalBLIP arm to choose from")
        return max(tuned, key=lambda k: (self.estimate(self.arms_of(k, SELECTION_SEEDS), HEADLINE, "val")["value"], k))


def relabel_references(items_path: Path) -> list[str]:
    """The reference reports of a committed `evaluation_items.csv.gz` labelled again by today's labeller; the file is
    rewritten only when a label changed. Returns "split:id" of each reference whose labels changed. The reports the
    arms wrote keep the labels they were given when scored: only their labels, not their text, are kept."""
    from medlib.experiments.clinicalblip import label_strings

    items = pd.read_csv(items_path, keep_default_na=False, dtype=str)
    new = label_strings(label_matrix(items.reference.tolist()))
    old = items.reference_labels.str.zfill(len(OBSERVATIONS)).tolist()
    changed = [f"{sp}:{i}" for sp, i, a, b in zip(items.split, items.id, old, new) if a != b]
    if changed:
        items["reference_labels"] = new
        fileio.write_with(items_path, lambda p: items.to_csv(p, index=False, compression={"method": "gzip", "mtime": 0}))
    return changed


def best_stages(run_dirs) -> str:
    """The stages of the arm best on validation (the value a sweep's "best" stands for)."""
    return Arms(run_dirs).best()[0]


def best_prior(run_dirs) -> str:
    return Arms(run_dirs).best()[1]


def system_name(key) -> str:
    stages, prior = key
    return f"{stages} / prior {prior}" + (" (LEAKAGE: the answer in the prompt)" if prior == "oracle-leak" else "")


def summary_table(arms: Arms):
    """One row per (stages, prior) and per baseline: every metric with its study-and-seed interval, the
    image-shuffled control's headline, the validation headline (what selection reads) and the cost."""
    def row(system, group, condition="model", key=None):
        out = {"system": system, "stages": key[0] if key else "", "prior": key[1] if key else "", "seeds": len(group)}
        for m in (*STATISTICS, *(MEANS if condition != "image_shuffled" else ())):  # the control is scored on CE only
            e = arms.estimate(group, m, "test", condition)
            out.update({m: e["value"], f"{m}_lo": e["lo"], f"{m}_hi": e["hi"]})
        if condition == "model":
            metrics = [a["train"]["metrics"] for a in group]
            for k in ("bleu4", "cider"):  # corpus values: no per-report scores to resample; the seeds' range instead
                values = [m.get(k) if m.get(k) is not None else np.nan for m in metrics]
                out.update({k: float(np.mean(values)), f"{k}_seed_min": float(np.min(values)), f"{k}_seed_max": float(np.max(values))})
            out["val_" + HEADLINE] = arms.estimate(group, HEADLINE, "val")["value"]
            out["minutes_per_arm"] = float(np.mean([a["duration_s"] for a in group]) / 60)
            out["decoding"] = ", ".join(sorted({f"beams {a['train']['decoding']['num_beams']}, penalty "
                                                f"{a['train']['decoding']['repetition_penalty']:g}" for a in group}))
        return out

    rows = []
    order = [(s, p) for p in (*PRIORS, "oracle-leak") for s in cb.STAGES if (s, p) in arms.groups]
    for key in order:
        group = arms.arms_of(key)
        rows.append(row(system_name(key), group, key=key))
        rows.append(row(f"{system_name(key)}, image-shuffled control", group, "image_shuffled", key))
    for name, label in (("common", "most common training report"), ("retrieval", "nearest-neighbour report (pre-trained ViT)")):
        rows.append(row(label, arms.arms[:1], name))  # a baseline's reports are the same in every arm (the cache)
    ref = names_finding(arms.gold["test"])
    rows.append({"system": "reference reports", "seeds": 0, "abnormal_share": float(ref.mean())})
    return pd.DataFrame(rows)


def claims_table(arms: Arms, best: tuple):
    """The gates and the paper's claims as paired comparisons on the test reports, Holm-corrected together.
    Each row: claim, arm, minus, metric, diff, lo, hi, p, p_holm, says (holds / fails / cannot be told apart)."""
    rows = []

    def add(kind, claim, a_key, b_key, metrics=(HEADLINE,), b_condition="model", a_seeds=None, b_seeds=None):
        a, b = arms.arms_of(a_key, a_seeds), arms.arms_of(b_key, b_seeds)
        if b_condition in ("common", "retrieval"):
            b = a  # the baseline's reports, kept beside each seed of the arm (the same reports)
        if not a or not b:
            return
        for m in metrics:
            d = arms.paired(a, b, m, "model", b_condition)
            minus = {"model": system_name(b_key), "image_shuffled": f"{system_name(a_key)}, image-shuffled",
                     "common": "most common training report", "retrieval": "nearest-neighbour report"}[b_condition]
            rows.append({"kind": kind, "claim": claim, "arm": system_name(a_key), "minus": minus, "metric": m,
                         "seeds": len(a), **{k: d[k] for k in ("diff", "lo", "hi", "p")}})

    leak = ("stage1+2", "oracle-leak")
    add("sanity", "the leak arm writes the findings it is given", leak, ("stage1+2", "none"), a_seeds=(0,), b_seeds=(0,))
    add("target", "the best arm beats the most common training report", best, best, b_condition="common")
    add("target", "the best arm beats the image-shuffled control (it reads the image)", best, best, b_condition="image_shuffled")
    for prior in PRIORS:
        for other in ("stage1", "stage2", "joint", "zero-shot"):
            add("paper", f"stage 1 -> 2 beats {other} (prior {prior})", ("stage1+2", prior), (other, prior), (HEADLINE, "meteor"))
    for stages in cb.STAGES:
        add("paper", f"the prior helps ({stages})", (stages, "indication+checklist"), (stages, "none"), (HEADLINE, "meteor"))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["p_holm"] = holm(frame.p)
    frame["says"] = np.where(frame.p_holm >= ALPHA, "cannot be told apart", np.where(frame["diff"] > 0, "holds", "fails"))
    return frame


RESOLVERS = {"stages": best_stages, "prior": best_prior}  # what a sweep's "best" stands for


def aggregate(run_dirs, out_dir: Path):
    """All finished arms -> `summary`, `claims`, `samples.md`, `verdict.md` and `ce_by_stage.png`."""
    arms = Arms(run_dirs)
    best = arms.best()
    summary = summary_table(arms)
    claims = claims_table(arms, best)

    write = partial(write_table, out_dir)  # (name, frame, title)

    write("summary", summary, "ClinicalBLIP on the test split. Every metric pools the arm's seeds; `_lo`/`_hi` are 95 % bootstrap "
          "intervals that resample test studies and seeds together. `ce13_` is CE over the 13 abnormal observations (No Finding "
          "left out: the headline), `ce5_` over CheXpert's 5 competition labels, `ce_micro_f1` over all 14; `abnormal_share` is "
          "the share of reports that name a finding (the reference reports' is the last row). METEOR is pycocoevalcap's per-report "
          "mean, `meteor_nltk` nltk's (the implementation ClinicalBLIP's 0.570 suggests); `bleu4` and `cider` are corpus values "
          "averaged over seeds, with the seeds' range (`_seed_min`/`_seed_max`), not an interval. `val_ce13_micro_f1` is what the best arm is chosen by. Each arm is followed by its image-shuffled "
          "control: the same model, every test study given another study's image.")
    if not claims.empty:
        write("claims", claims, "Paired differences (arm minus the other) on the same test reports; studies and seeds resampled "
              "together; two-sided bootstrap p, Holm-corrected over every row (`p_holm`). `says`: holds (above 0), fails (below) "
              "or cannot be told apart, at 0.05 after correction.")
    _samples(arms, best, out_dir)
    fileio.write_text(out_dir / "verdict.md", verdict(summary, claims, best))
    fileio.write_text(out_dir / "headline.json", json.dumps(headline(summary, claims, best), indent=1) + "\n")
    _figure(summary, best, out_dir)
    return summary


def _samples(arms: Arms, best, out_dir: Path, n: int = 8) -> None:
    first = arms.arms_of(best, (0,))
    if not first or not (first[0]["dir"] / "reports.csv").exists():
        return
    rep = pd.read_csv(first[0]["dir"] / "reports.csv", keep_default_na=False)
    gold = dict(zip(arms.ids["test"], names_finding(arms.gold["test"])))
    named = rep.id.map(gold).fillna(False).astype(bool)  # the labeller's reading of the reference: it names a finding
    frame = pd.concat([rep[named].head(n // 2), rep[~named].head(n - n // 2)])
    fileio.write_text(out_dir / "samples.md", f"Test reports of the best arm ({system_name(best)}, seed 0): the reference, the "
                      "generated report, and the report the same model wrote from another study's image (the control); "
                      "first studies whose reference names a finding, then others.\n\n" + to_markdown(frame))


def _figure(summary, best, out_dir: Path) -> None:
    # imported here: heavy: figures only
    import matplotlib

    matplotlib.use("Agg")
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    panels = ((HEADLINE, "abnormal-only CE micro-F1 (13 observations)"), ("abnormal_share", "share of reports naming a finding"),
              ("meteor", "METEOR (pycocoevalcap)"))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    model = summary[(summary.prior.isin(PRIORS)) & ~summary.system.str.endswith("image-shuffled control")]
    shuffled = summary[(summary.prior.isin(PRIORS)) & summary.system.str.endswith("image-shuffled control")]
    stages = [s for s in cb.STAGES if s in set(model.stages)]
    width = 0.38
    for ax, (key, label) in zip(axes, panels):
        for j, prior in enumerate(PRIORS):
            m = model[model.prior == prior].set_index("stages").reindex(stages)
            sh = shuffled[shuffled.prior == prior].set_index("stages").reindex(stages)
            x = np.arange(len(stages)) + (j - 0.5) * width
            ax.bar(x, m[key], width, color=f"C{j}", label=f"model, prior: {prior}",
                   yerr=[m[key] - m[f"{key}_lo"], m[f"{key}_hi"] - m[key]], capsize=3)
            ax.plot(x, sh[key], "v", color="black", mfc="white", ms=8, ls="", label="the same model, image-shuffled")
        leak = summary[(summary.prior == "oracle-leak") & ~summary.system.str.endswith("image-shuffled control")]
        for _, r in leak.iterrows():
            if r.stages in stages:
                ax.plot(stages.index(r.stages), r[key], "r*", ms=14, label="oracle-leak prior (LEAKAGE), stage1+2")
        for i, name in enumerate(("most common training report", "nearest-neighbour report (pre-trained ViT)", "reference reports")):
            b = summary[summary.system == name]
            if not b.empty and not np.isnan(b.iloc[0].get(key, np.nan)):
                ax.axhline(b.iloc[0][key], color=("0.3", "0.55", "green")[i], ls=("--", ":", "-.")[i], lw=1.2, label=name)
        ax.set_xticks(np.arange(len(stages)))
        ax.set_xticklabels(stages)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("training stages")
    axes[0].set_ylabel("test value (95 % interval)")
    h, lab = axes[0].get_legend_handles_labels()
    for a in axes[1:]:
        h2, l2 = a.get_legend_handles_labels()
        h, lab = h + h2, lab + l2
    uniq = dict(zip(lab, h))
    fig.legend(uniq.values(), uniq.keys(), fontsize=8, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.12))
    fig.suptitle(f"ClinicalBLIP, tiny profile, test split: bars pool the seeds, whiskers are 95 % intervals over studies and seeds; "
                 f"best on validation: {system_name(best)}", fontsize=10)
    fig.tight_layout()
    write_figure(fig, out_dir / "ce_by_stage.png", (summary, best))
    plt.close(fig)


# (short name, the verdict's words, the prefix of its rows in claims)
PAPER_CLAIMS = (("multi-stage", "the paper's multi-stage claim (stage 1 -> 2 beats each single stage)", "stage 1 -> 2 beats stage"),
                ("prior-knowledge", "the paper's prior-knowledge claim (the prior helps)", "the prior helps"))


def claim_says(rows) -> str:
    """A claim made of several paired comparisons: holds when every one holds, fails when any fails."""
    return "holds" if (rows.says == "holds").all() else ("fails" if (rows.says == "fails").any() else "cannot be told apart")


def sanity_passed(by, claims) -> bool:
    """The generator's sanity check: the oracle-leak arm names findings near the reference share and beats the
    same stages without a prior. `by`: the summary indexed by system."""
    leak_name = system_name(("stage1+2", "oracle-leak"))
    rows = claims[claims.claim == "the leak arm writes the findings it is given"] if not claims.empty else claims
    if leak_name not in by.index or rows.empty:
        return False
    ref_share = float(by.loc["reference reports", "abnormal_share"])
    near = NEAR_REFERENCE[0] * ref_share <= by.loc[leak_name, "abnormal_share"] <= NEAR_REFERENCE[1] * ref_share
    return bool(near and rows.iloc[0].lo > 0)


def headline(summary, claims, best) -> dict:
    """The row of the front table in results/README.md, computed from the same tables as the verdict: each paper
    claim on the headline CE-F1 and on METEOR; reproduced yes when both claims hold on both metrics, no when none
    holds on either, partly otherwise; not tested when the oracle-leak sanity check has not passed."""
    by = summary.set_index("system")
    b = by.loc[system_name(best)]
    sane = sanity_passed(by, claims)
    paper = claims[claims.kind == "paper"] if not claims.empty else claims
    states, parts = [], []
    for short, _, prefix in PAPER_CLAIMS:
        for metric, name in ((HEADLINE, "abnormal-only CE-F1"), ("meteor", "METEOR")):
            rows = paper[paper.claim.str.startswith(prefix) & (paper.metric == metric)] if len(paper) else paper
            if len(rows):
                states.append(claim_says(rows))
                parts.append(f"{short} claim on {name}: {states[-1]} "
                             f"({(rows.says == 'holds').sum()} of {len(rows)} comparisons hold, {(rows.says == 'fails').sum()} fail)")
    if not sane or not states:
        word, state = "not tested", "the oracle-leak sanity check did not pass" if not sane else "no stage comparison ran"
    else:
        word = "yes" if all(s == "holds" for s in states) else ("no" if "holds" not in states else "partly")
        state = ", ".join(states)
    parts.insert(0, f"best arm on validation {system_name(best)}: test METEOR {b.meteor:.3f} [{b.meteor_lo:.3f}, "
                    f"{b.meteor_hi:.3f}], abnormal-only CE-F1 {b[HEADLINE]:.3f} [{b[HEADLINE + '_lo']:.3f}, {b[HEADLINE + '_hi']:.3f}]")
    return {"paper": "ClinicalBLIP", "claim": "LoRA in stages (vision side, then LLM) beats each single stage; a prior-knowledge "
            "prompt helps", "paper_number": "METEOR 0.570, ROUGE 0.534 (IU X-Ray, 7B)", "finds": "; ".join(parts),
            "state": state, "reproduced": word, "notebook": "notebooks/02_clinicalblip_multistage_lora.ipynb",
            "figure": "ce_by_stage.png"}


def verdict(summary, claims, best) -> str:
    """What the numbers say, in words, computed from them (so the words cannot drift from the tables)."""
    lines = ["Computed by `medlib.experiments.clinicalblip_results.verdict` from `summary.md` and `claims.md` beside it.", ""]
    by = summary.set_index("system")
    ref_share = float(by.loc["reference reports", "abnormal_share"])

    def ci(r, k):
        return f"{r[k]:.3f} [{r[f'{k}_lo']:.3f}, {r[f'{k}_hi']:.3f}]"

    def claim(text):
        return claims[claims.claim == text] if not claims.empty else claims

    # the sanity check
    leak_name = system_name(("stage1+2", "oracle-leak"))
    sanity = False
    if leak_name in by.index:
        lk = by.loc[leak_name]
        rows = claim("the leak arm writes the findings it is given")
        sanity = sanity_passed(by, claims)
        d = rows.iloc[0] if not rows.empty else None
        lines.append(f"- **Sanity check ({'passed' if sanity else 'FAILED'})**: the oracle-leak arm (the test study's tags in the prompt) names "
                     f"a finding in {lk.abnormal_share:.0%} of its reports (references {ref_share:.0%}; asked: "
                     f"{NEAR_REFERENCE[0]:g}-{NEAR_REFERENCE[1]:g}x) and reaches abnormal-only CE-F1 {ci(lk, HEADLINE)}"
                     + (f", {d['diff']:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}] over the same stages without a prior" if d is not None else "")
                     + ". It is a demonstration of leakage, not a result.")
    else:
        lines.append("- **Sanity check not run**: no oracle-leak arm has finished.")
    b = by.loc[system_name(best)]
    sh = by.loc[f"{system_name(best)}, image-shuffled control"]
    common = by.loc["most common training report"]
    lines.append(f"- Best fine-tuned arm on validation (abnormal-only CE-F1 {b['val_' + HEADLINE]:.3f}): **{system_name(best)}**, "
                 f"{int(b.seeds)} seed{'s' if int(b.seeds) != 1 else ''}. Test: abnormal-only CE-F1 {ci(b, HEADLINE)}, macro {ci(b, 'ce13_macro_f1')}, "
                 f"5 competition labels {ci(b, 'ce5_micro_f1')}; METEOR {ci(b, 'meteor')}; names a finding in {b.abnormal_share:.0%} of "
                 f"reports (references {ref_share:.0%}).")
    share_ok = b.abnormal_share >= MIN_SHARE * ref_share
    targets = [share_ok]
    lines.append(f"- Target, names findings in at least {MIN_SHARE:.0%} of the reference share: "
                 f"{'met' if share_ok else 'NOT met'} ({b.abnormal_share:.0%} vs {MIN_SHARE * ref_share:.0%}).")
    for text, other, value in (("the best arm beats the most common training report", "the most common training report", common),
                               ("the best arm beats the image-shuffled control (it reads the image)", "its image-shuffled control", sh)):
        rows = claim(text)
        if rows.empty:
            targets.append(False)
            continue
        r = rows.iloc[0]
        met = r.says == "holds"
        targets.append(met)
        lines.append(f"- Target, beats {other} ({value[HEADLINE]:.3f}) on abnormal-only CE-F1: {'met' if met else 'NOT met'}: "
                     f"{r['diff']:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}], Holm p {r.p_holm:.3g}.")
    if not sanity:
        lines.append("- The stage and prior comparison is **not published**: a generator that cannot write the findings it is told "
                     "is broken, and its differences between arms are differences in phrasing.")
        return "\n".join(lines) + "\n"
    if not all(targets):
        lines.append("- The targets are not all met, so the comparison below is between models that do not (all) write what they "
                     "see; read it as such.")
    paper = claims[claims.kind == "paper"]
    for text, group in paper.groupby("claim", sort=False):
        parts = [f"{r.metric} {r['diff']:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}] ({r.says})" for _, r in group.iterrows()]
        lines.append(f"- Claim: {text}: " + "; ".join(parts) + ".")
    for _, text, prefix in PAPER_CLAIMS:
        rows = paper[paper.claim.str.startswith(prefix) & (paper.metric == HEADLINE)]
        if rows.empty:
            continue
        says = claim_says(rows)
        lines.append(f"- **{text[0].upper() + text[1:]}, on abnormal-only CE-F1: {says}** ({(rows.says == 'holds').sum()} of "
                     f"{len(rows)} comparisons hold, {(rows.says == 'fails').sum()} fail).")
    lines.append("- The paper's abstract reports METEOR 0.570 / ROUGE 0.534 on IU X-Ray with a 7B model on real images, very likely "
                 "with nltk's METEOR; `meteor_nltk` in summary.md is the comparable column, and these tiny models on rendered "
                 "images are not comparable in size.")
    return "\n".join(lines) + "\n"
