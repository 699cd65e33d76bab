"""ClinicalBLIP: the finished arms aggregated into tables, figures and the computed verdict (what
`medlib reproduce` and `medlib aggregate clinicalblip` write beside the arms).

The headline is CE-F1 over the 13 abnormal observations (the normal report scores 0 there). The paper's claim is
tested part by part on the claims framework (`medlib.claims`, docs/claims.md): stage 1 -> 2 with the prior against
each single stage and against itself without the prior, every stage arm at one budget of optimizer steps, on three
zoo builds. Two checks make the claim mean something: the arm reads the image (it beats its image-shuffled self)
and it beats a training report drawn at random (a text baseline that names findings at their training
frequencies). Reference rows, not parts: nearest-neighbour retrieval and the oracle-leak arm, the generator's
sanity check.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd

from medlib import claims as cl
from medlib import fileio, plots
from medlib.experiments.aggregate import Outputs, ScoredArms, pair_runs, provenance_line, run_unit
from medlib.metrics.clinical import CE_STATISTICS, label_array, names_finding, statistic_counts
from medlib.metrics.report_generation import PER_REPORT_SCORES  # their mean over reports is the metric
from medlib.models import clinicalblip as cb
from medlib.tables import to_markdown, write_figure

HEADLINE = "ce13_micro_f1"
# The leak arm "writes the findings it is given" when it names a finding in this band of the reference share.
NEAR_REFERENCE = (0.5, 1.5)
# A run that names a finding in under this share of its test reports (the references: about half) has collapsed onto
# reports without findings: its abnormal-only CE-F1 is near 0 by construction.
COLLAPSED = 0.02
PRIORS = ("none", "indication+checklist")
PAPER_ARM = ("stage1+2", "indication+checklist")
NO_PRIOR = ("stage1+2", "none")
LEAK = ("stage1+2", "oracle-leak")
BASELINES = {"common": "most common training report", "random": "a training report drawn at random",
             "retrieval": "nearest-neighbour report (pre-trained ViT)"}

# Written before the runs that decide it. The paper (abstract only) gives no per-stage numbers: no paper_effect.
CLAIM = cl.Claim("clinicalblip", "ClinicalBLIP",
                 "LoRA in stages (vision side, then LLM) beats each single stage; a prior-knowledge prompt helps", (
                     cl.Part("image", "stage 1 -> 2 beats its image-shuffled control", "stage1+2", "stage1+2, image-shuffled",
                             HEADLINE, check=True),
                     cl.Part("beats_random_report", "stage 1 -> 2 beats a training report drawn at random", "stage1+2",
                             "a random training report", HEADLINE, check=True),
                     cl.Part("beats_stage1", "stage 1 -> 2 beats stage 1 alone", "stage1+2", "stage1", HEADLINE),
                     cl.Part("beats_stage2", "stage 1 -> 2 beats stage 2 alone", "stage1+2", "stage2", HEADLINE),
                     cl.Part("prior_helps", "the prior-knowledge prompt helps stage 1 -> 2", "stage1+2", "stage1+2, no prior",
                             HEADLINE),
                 ))
# part -> (arm a, arm b or None for a's own reports under `condition`, condition of b)
PAIRS = {"image": (PAPER_ARM, None, "image_shuffled"), "beats_random_report": (PAPER_ARM, None, "random"),
         "beats_stage1": (PAPER_ARM, ("stage1", "indication+checklist"), "model"),
         "beats_stage2": (PAPER_ARM, ("stage2", "indication+checklist"), "model"),
         "prior_helps": (PAPER_ARM, NO_PRIOR, "model")}


def _key(arm: dict) -> tuple:
    return arm["params"]["stages"], arm["params"]["prior"]


class Arms(ScoredArms):
    """The finished arms grouped by (stages, prior), with their per-report scores and labels per split and
    condition (model, image_shuffled, and the baselines common, random, retrieval)."""

    conditions = True
    dtypes = {"labels": str}

    def __init__(self, run_dirs):
        super().__init__(run_dirs, "ClinicalBLIP", _key)
        self.gold = {s: label_array(self.items[s].reference_labels.astype(str).tolist())
                     for s in self.splits}
        self.ids = {s: self.items[s].id.to_numpy() for s in self.splits}

    def arms_of(self, key) -> list[dict]:
        return self.groups.get(key, [])

    def labels(self, arms, split="test", condition="model") -> np.ndarray:
        """(runs, reports, 14) labels of the reports the arms wrote."""
        return np.stack([label_array(self.rows[a["dir"]][split, condition]["labels"].tolist())
                         for a in arms])

    def counts(self, arms, metric, split="test", condition="model") -> np.ndarray:
        return statistic_counts(self.labels(arms, split, condition), self.gold[split][None], metric)

    def scores(self, arms, metric, split="test", condition="model") -> np.ndarray:
        return np.stack([self.rows[a["dir"]][split, condition][metric].to_numpy(float) for a in arms])

    def _series(self, arms, metric, split, condition):
        """One arm's runs as a `cl.Paired` / `cl.PairedCounts` against 0: what a level's interval resamples."""
        builds = np.array([run_unit(a)[0] for a in arms])
        if metric in CE_STATISTICS:
            c = self.counts(arms, metric, split, condition)
            return cl.PairedCounts(c, np.zeros_like(c), builds, self.ids[split], CE_STATISTICS[metric][1])
        x = self.scores(arms, metric, split, condition)
        return None if np.isnan(x).any() else cl.Paired(x, builds, self.ids[split])

    def level(self, arms, metric, split="test", condition="model") -> dict:
        """The metric over the arms' runs (each build's mean of its runs, then the mean over builds) with a 95 %
        interval from the hierarchical bootstrap (builds, runs within builds, studies); NaN where a score is missing."""
        x = self._series(arms, metric, split, condition)
        if x is None:
            return {"value": np.nan, "lo": np.nan, "hi": np.nan}
        mean, lo, hi = cl.interval(x, num_resamples=2000)
        return {"value": mean, "lo": lo, "hi": hi}

    def per_run(self, arms, metric, split="test", condition="model") -> np.ndarray:
        """Each run's value of `metric`."""
        return self._series(arms, metric, split, condition).run_values()

    def paired(self, a_key, b_key, metric=HEADLINE, condition="model"):
        """Arm `a_key` minus arm `b_key` (or `a_key`'s own reports under `condition`) on the same test reports, on the
        runs (zoo build, seed) both have."""
        A, B, builds = pair_runs(self.arms_of(a_key), None if b_key is None else self.arms_of(b_key),
                                 f"{system_name(a_key)} and {system_name(b_key or a_key)}")
        if metric in CE_STATISTICS:
            return cl.PairedCounts(self.counts(A, metric), self.counts(B, metric, "test", condition), builds,
                                   self.ids["test"], CE_STATISTICS[metric][1])
        return cl.Paired(self.scores(A, metric) - self.scores(B, metric, "test", condition), builds, self.ids["test"])

    def without_collapsed(self) -> Arms:
        """The same arms without their collapsed runs: a part then pairs only the runs in which neither arm collapsed."""
        view = copy.copy(self)
        view.groups = {k: [a for a in g if self.per_run([a], "abnormal_share")[0] >= COLLAPSED] for k, g in self.groups.items()}
        return view

    def has(self, part_key: str) -> bool:
        """Whether the runs a part compares exist (arms of an older medlib may lack a baseline's reports)."""
        a, b, condition = PAIRS[part_key]
        if b is not None:
            return bool(self.arms_of(a)) and bool(self.arms_of(b))
        return bool(self.arms_of(a)) and all(("test", condition) in self.rows[x["dir"]] for x in self.arms_of(a))

    def best(self) -> tuple[tuple, float]:
        """The fine-tuned (stages, prior) with the highest validation abnormal-only CE-F1 (the mean over its runs),
        and that value: the one the choice read. Test never enters."""
        tuned = {k: float(np.mean(self.per_run(self.arms_of(k), HEADLINE, "val"))) for k in self.groups
                 if k[0] != "zero-shot" and k[1] in PRIORS}
        if not tuned:
            raise ValueError("no finished fine-tuned ClinicalBLIP arm to choose from")
        key = max(tuned, key=lambda k: (tuned[k], k))
        return key, tuned[key]


RESOLVERS: dict = {}  # no ClinicalBLIP sweep asks for "best": the claim's arms are named before the runs


def system_name(key) -> str:
    stages, prior = key
    return f"{stages} / prior {prior}" + (" (LEAKAGE: the answer in the prompt)" if prior == "oracle-leak" else "")


def summary_table(arms: Arms):
    """One row per (stages, prior), its image-shuffled control and each baseline: every metric with its interval
    over zoo builds, runs and studies, the validation headline (what the best arm is chosen by), the budget, the runs
    that name no finding, and the cost."""
    def row(system, group, condition="model", key=None):
        out = {"system": system, "stages": key[0] if key else "", "prior": key[1] if key else "", "runs": len(group),
               "zoo_builds": len({run_unit(a)[0] for a in group})}
        for m in (*CE_STATISTICS, *(PER_REPORT_SCORES if condition != "image_shuffled" else ())):  # the control is scored on CE only
            e = arms.level(group, m, "test", condition)
            out.update({m: e["value"], f"{m}_lo": e["lo"], f"{m}_hi": e["hi"]})
        if condition == "model":
            metrics = [a["train"]["metrics"] for a in group]
            for k in ("bleu4", "cider"):  # corpus values: no per-report scores to resample; the runs' range instead
                values = [m.get(k) if m.get(k) is not None else np.nan for m in metrics]
                out.update({k: float(np.mean(values)), f"{k}_run_min": float(np.min(values)), f"{k}_run_max": float(np.max(values))})
            out["val_" + HEADLINE] = float(np.mean(arms.per_run(group, HEADLINE, "val")))
            share, builds = arms.per_run(group, "abnormal_share"), np.array([run_unit(a)[0] for a in group])
            out["runs_collapsed"] = int((share < COLLAPSED).sum())
            out["abnormal_share_by_build"] = " / ".join(f"{share[builds == k].mean():.0%}" for k in np.unique(builds))
            out["collapsed_builds"] = " ".join(str(k) for k in np.unique(builds[share < COLLAPSED]))
            out["epochs"] = " + ".join(str(s["epochs"]) for s in group[0]["train"].get("stages", [])) or "0"
            out["total_epochs"] = sum(s["epochs"] for s in group[0]["train"].get("stages", []))
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
    # a baseline's reports depend on the build (retrieval reads its ViT), not the seed: read beside the paper's arm
    base_runs = arms.arms_of(PAPER_ARM) or arms.arms[:1]
    for name, label in BASELINES.items():
        if all((name in {c for _, c in arms.rows[a["dir"]]}) for a in base_runs):
            rows.append(row(label, base_runs, name))
    rows.append({"system": "reference reports", "runs": 0, "abnormal_share": float(names_finding(arms.gold["test"]).mean())})
    return pd.DataFrame(rows)


def test_claim(arms: Arms, metric: str = HEADLINE, claim: cl.Claim = CLAIM) -> list[cl.PartResult]:
    """The claim's parts on `metric`, each paired on the runs both arms have, Holm-corrected together. On a metric
    the image-shuffled control is not scored on (it is scored on CE only), that part is left out."""
    parts = tuple(cl.Part(p.key, p.wording, p.a, p.b, metric, p.direction, p.paper_effect, p.check) for p in claim.parts
                  if arms.has(p.key) and not (p.key == "image" and metric not in CE_STATISTICS))
    paired = {p.key: arms.paired(PAIRS[p.key][0], PAIRS[p.key][1], metric, PAIRS[p.key][2]) for p in parts}
    return cl.test_parts(cl.Claim(claim.key, claim.paper, claim.wording, parts), paired)


def references(arms: Arms, best: tuple) -> pd.DataFrame:
    """What the claim is read against, not parts of it: the generators minus nearest-neighbour retrieval, and the
    oracle-leak arm (the sanity check) minus the same stages without a prior. 95 % intervals, not corrected."""
    rows = []
    for key, name, a, b, cond in (
            ("best_retrieval", "best on validation minus nearest-neighbour retrieval", best, None, "retrieval"),
            ("paper_retrieval", "stage 1 -> 2 minus nearest-neighbour retrieval", PAPER_ARM, None, "retrieval"),
            ("leak_retrieval", "oracle-leak minus nearest-neighbour retrieval", LEAK, None, "retrieval"),
            ("sanity", "oracle-leak minus stage 1 -> 2 without a prior (the sanity check)", LEAK, NO_PRIOR, "model")):
        if not arms.arms_of(a) or (b is not None and not arms.arms_of(b)):
            continue
        x = arms.paired(a, b, HEADLINE, cond)
        mean, lo, hi = cl.interval(x)
        rows.append({"key": key, "reference": name, "a": system_name(a), "metric": HEADLINE, "difference": mean, "ci_lo": lo,
                     "ci_hi": hi, "runs": len(x.builds), "zoo_builds": len(np.unique(x.builds))})
    return pd.DataFrame(rows)


def sanity_passed(by, refs) -> bool:
    """The generator's sanity check: the oracle-leak arm names findings near the reference share and beats the
    same stages without a prior. `by`: the summary indexed by system."""
    leak = system_name(LEAK)
    row = refs[refs.key == "sanity"] if len(refs) else refs
    if leak not in by.index or row.empty:
        return False
    ref_share = float(by.loc["reference reports", "abnormal_share"])
    near = NEAR_REFERENCE[0] * ref_share <= by.loc[leak, "abnormal_share"] <= NEAR_REFERENCE[1] * ref_share
    return bool(near and row.iloc[0].ci_lo > 0)


def aggregate(run_dirs, out_dir: Path):
    """All finished arms -> `summary`, `claim`, `claim_meteor`, `references`, `samples.md`, `verdict.md`,
    `headline.json` and `ce_by_stage.png`."""
    arms = Arms(run_dirs)
    if not arms.arms_of(PAPER_ARM):
        raise ValueError(f"no finished arm {system_name(PAPER_ARM)}: the paper's claim cannot be tested")
    best, best_val = arms.best()
    summary = summary_table(arms)
    results = test_claim(arms)
    described = test_claim(arms, "meteor")
    try:  # the degenerate runs named apart: described beside the word, never deciding it
        apart = test_claim(arms.without_collapsed())
    except ValueError:  # a part has no run left in which neither arm collapsed
        apart = []
    refs = references(arms, best)
    out = Outputs(out_dir)
    write = out.table
    write("summary", summary, "ClinicalBLIP on the test split, mean over runs (a run is one seed on one build of the tiny zoo); "
          "`_lo`/`_hi`: 95 % intervals from a bootstrap resampling zoo builds, runs within builds and test studies. `ce13_` is CE "
          "over the 13 abnormal observations (No Finding left out: the headline), `ce5_` over CheXpert's 5 competition labels, "
          "`ce_micro_f1` over all 14; `abnormal_share` is the share of reports that name a finding (the reference reports' is the "
          "last row). METEOR is pycocoevalcap's per-report mean, `meteor_nltk` nltk's (the implementation ClinicalBLIP's 0.570 "
          "suggests); `bleu4` and `cider` are corpus values averaged over runs, with the runs' range, not an interval. "
          "`val_ce13_micro_f1`: what the best arm is chosen by. `epochs`: passes over the training reports per stage (every "
          "fine-tuned arm trains the same number of optimizer steps). `runs_collapsed`: runs that name a finding in under "
          f"{COLLAPSED:.0%} of their test reports (`collapsed_builds`: on which builds); `abnormal_share_by_build`: the share "
          "per zoo build. Each arm is followed by its image-shuffled control (every test study given another study's image); "
          "the baselines are read beside the runs of stage 1 -> 2 with the prior.")
    write("claim", cl.table(results), "The claim's parts (`medlib.experiments.clinicalblip_results.CLAIM`) on abnormal-only CE-F1, "
          "stage 1 -> 2 with the prior minus the other arm on the same test reports. Intervals at the level Holm's procedure tests "
          "each part at, from a bootstrap over zoo builds, runs and studies; `p_sign_flip`: exact sign-flip test over the paired "
          "runs; `build_k`: the difference on build k alone; `detectable`: the interval's half-width. A part holds when Holm "
          "rejects, the interval excludes 0 in the paper's direction and every build agrees (`medlib.claims`).")
    write("claim_meteor", cl.table(described), "The same parts on METEOR, the paper's own metric, described: they do not decide "
          "the word (the image-shuffled control is scored on CE only).")
    if len(refs):
        write("references", refs, "What the claim is read against: differences in abnormal-only CE-F1 on the same test reports, "
              "95 % intervals over zoo builds, runs and studies, not corrected. The oracle-leak arm has the test study's tags in "
              "its prompt: a check of the generator, not a result.")
    _samples(arms, PAPER_ARM, out_dir)
    word = cl.word(results)
    runs = [a for g in arms.groups.values() for a in g]
    out.verdict(verdict(summary, results, described, refs, word, (best, best_val), runs, apart),
                headline(summary, results, refs, word))
    _figure(summary, out_dir)
    return summary


def _samples(arms: Arms, key, out_dir: Path, n: int = 8) -> None:
    first = arms.arms_of(key)[:1]
    if not first or not (first[0]["dir"] / "reports.csv").exists():
        return
    rep = pd.read_csv(first[0]["dir"] / "reports.csv", keep_default_na=False)
    gold = dict(zip(arms.ids["test"], names_finding(arms.gold["test"])))
    named = rep.id.map(gold).fillna(False).astype(bool)  # the labeller's reading of the reference: it names a finding
    frame = pd.concat([rep[named].head(n // 2), rep[~named].head(n - n // 2)])
    build, seed = run_unit(first[0])
    fileio.write_text(out_dir / "samples.md", f"Test reports of {system_name(key)} (zoo build {build}, seed {seed}): the "
                      "reference, the generated report, and the report the same model wrote from another study's image (the "
                      "control); first studies whose reference names a finding, then others.\n\n" + to_markdown(frame))


def _figure(summary, out_dir: Path) -> None:
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt

    fig = plots.stage_comparison(summary, [s for s in cb.STAGES if s in set(summary.stages)], PRIORS,
                                 [*BASELINES.values(), "reference reports"])
    write_figure(fig, out_dir / "ce_by_stage.png", summary)
    plt.close(fig)


def _ci(r, k: str) -> str:
    return f"{r[k]:.3f} [{r[f'{k}_lo']:.3f}, {r[f'{k}_hi']:.3f}]"


def headline(summary, results: list[cl.PartResult], refs, word: str) -> dict:
    """The row of the front table in results/README.md, from the same parts as the verdict."""
    by = summary.set_index("system")
    b = by.loc[system_name(PAPER_ARM)]
    parts = [f"stage 1 -> 2 with the prior: test abnormal-only CE-F1 {_ci(b, HEADLINE)} over {int(b.runs)} runs on "
             f"{int(b.zoo_builds)} zoo builds"] + cl.brief(results)
    retrieval = refs[refs.key == "paper_retrieval"] if len(refs) else refs
    if len(retrieval):
        r = retrieval.iloc[0]
        parts.append(f"nearest-neighbour retrieval, no generator: {r.difference:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}] against it")
    if not sanity_passed(by, refs):
        parts.append("the oracle-leak sanity check did not pass")
    return {"paper": "ClinicalBLIP", "claim": CLAIM.wording, "paper_number": "METEOR 0.570, ROUGE 0.534 (IU X-Ray, 7B)",
            "finds": "; ".join(parts), "reproduced": word, "notebook": "notebooks/02_clinicalblip_multistage_lora.ipynb",
            "figure": "ce_by_stage.png"}


def verdict(summary, results: list[cl.PartResult], described: list[cl.PartResult], refs, word: str, best: tuple,
            runs: list[dict] = (), apart: list[cl.PartResult] = ()) -> str:
    """What the numbers say, in words computed from them (so the words cannot drift from the tables)."""
    by = summary.set_index("system")
    b = by.loc[system_name(PAPER_ARM)]
    ref_share = float(by.loc["reference reports", "abnormal_share"])
    lines = ["Computed by `medlib.experiments.clinicalblip_results.verdict` from `summary`, `claim`, `claim_meteor` and "
             f"`references`. {provenance_line(runs)}", "",
             f"**The paper's claim** ({CLAIM.wording}): **{word}**.", "",
             f"- Stage 1 -> 2 with the prior on test: abnormal-only CE-F1 {_ci(b, HEADLINE)}, METEOR {_ci(b, 'meteor')}, "
             f"{int(b.runs)} runs on {int(b.zoo_builds)} zoo build{'s' if b.zoo_builds != 1 else ''}; it names a finding in {b.abnormal_share:.0%} of its reports "
             f"(references {ref_share:.0%})."]
    tuned = summary[summary.stages.isin(["stage1", "stage2", "stage1+2", "joint"]) & summary.prior.isin(PRIORS)
                    & ~summary.system.str.endswith("image-shuffled control")]
    budgets = ", ".join(f"{r.stages} {r.epochs}" for r in tuned.drop_duplicates("stages").itertuples())
    lines.append(f"- **One budget**: passes over the training reports per stage, {budgets}: every fine-tuned arm takes the "
                 "same number of optimizer steps." if tuned.total_epochs.nunique() == 1 else
                 f"- **Budgets differ**: passes over the training reports per stage, {budgets}: a stage comparison here is "
                 "also a comparison of training budgets.")
    lines += [f"- {cl.said(r)}." for r in results]
    lines.append(f"- **The word**: {word}, because {cl.why(word, results)}.")
    if b.runs_collapsed:  # what the parts compare when the paper's arm has collapsed: said beside the word
        collapsed = {int(k) for k in str(b.collapsed_builds).split()}
        whole = [k for k in range(int(b.zoo_builds)) if k not in collapsed]
        parts = [r for r in results if not r.part.check]
        lines.append(f"- **What the word rests on**: stage 1 -> 2 with the prior collapses in {int(b.runs_collapsed)} of "
                     f"{int(b.runs)} runs, on build{'s' if len(collapsed) != 1 else ''} {', '.join(map(str, sorted(collapsed)))} "
                     f"(it names a finding in {b.abnormal_share_by_build} of its reports per build), so there the parts compare "
                     "other arms with a model that names almost no finding. " + (
                         f"On build{'s' if len(whole) != 1 else ''} {', '.join(map(str, whole))}, where no run collapses: "
                         + "; ".join(f"{r.part.wording} {', '.join(f'{r.by_build[k]:+.3f}' for k in whole)}" for r in parts)
                         + "." if whole else "No build is free of it."))
        if apart:
            lines.append("- **Without the collapsed runs** (each part on the runs in which neither arm collapsed): "
                         + "; ".join(f"{r.part.wording} {r.difference:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}] over {r.runs} runs "
                                     f"({r.state})" for r in apart)
                         + (f". By the same rule these parts would give *{cl.word(apart)}*, not *{word}*: the word rests on "
                            "the collapsed runs as much as on the stages" if cl.word(apart) != word else
                            f". By the same rule they give the same word, *{word}*")
                         + ". Which runs collapse is an outcome of the arm, so they are not dropped from the claim; they "
                         "are named.")
    if described:
        lines.append("- On METEOR, the paper's metric (described, not deciding the word): " + "; ".join(
            f"{r.part.wording} {r.difference:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}] ({r.state})" for r in described) + ".")
    for r in refs.itertuples() if len(refs) else ():
        lines.append(f"- Reference: {r.reference}: {r.difference:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}] "
                     f"({r.runs} run{'s' if r.runs != 1 else ''}).")
    leak = system_name(LEAK)
    if leak in by.index:
        lk = by.loc[leak]
        lines.append(f"- **Sanity check ({'passed' if sanity_passed(by, refs) else 'FAILED'})**: the oracle-leak arm (the test "
                     f"study's tags in the prompt) names a finding in {lk.abnormal_share:.0%} of its reports (references "
                     f"{ref_share:.0%}; asked: {NEAR_REFERENCE[0]:g}-{NEAR_REFERENCE[1]:g}x) and beats the same stages without "
                     "a prior (`references`). It shows the generator can write findings; it is leakage, not a result.")
    else:
        lines.append("- **Sanity check not run**: no oracle-leak arm has finished.")
    key, value = best
    lines.append(f"- Best fine-tuned arm on validation: **{system_name(key)}**, validation abnormal-only CE-F1 {value:.3f} "
                 f"over its {int(by.loc[system_name(key), 'runs'])} runs; the claim's parts do not depend on this choice.")
    for r in summary[summary.runs_collapsed.fillna(0) > 0].itertuples():
        lines.append(f"- **Collapsed**: {r.system} names a finding in under {COLLAPSED:.0%} of its test reports in "
                     f"{int(r.runs_collapsed)} of {int(r.runs)} runs (per build {r.abnormal_share_by_build}; references "
                     f"{ref_share:.0%}): there its abnormal-only CE-F1 is near 0 by construction.")
    lines.append("- The paper's abstract reports METEOR 0.570 / ROUGE 0.534 on IU X-Ray with a 7B model on real images, very "
                 "likely with nltk's METEOR (`meteor_nltk` in `summary`); tiny models on rendered images are comparable in the "
                 "shape of the claim, not its level.")
    return "\n".join(lines) + "\n"
