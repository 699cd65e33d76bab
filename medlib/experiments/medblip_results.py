"""MedBLIP: the finished arms aggregated into tables, figures and the computed verdict (what
`medlib reproduce` and `medlib aggregate medblip` write beside the arms).

Everything is chosen on validation (the best ratio) and reported on test. Intervals resample test
studies and seeds together (`metrics.bootstrap.study_bootstrap`); comparisons are paired on the same
questions, and the claims one verdict tests are Holm-corrected together.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from medlib import fileio
from medlib.metrics.bootstrap import holm, paired_study_bootstrap, study_bootstrap
from medlib.runs import load_arms, scored_arms, write_figure, write_table

PAPER_RATIO = 0.3125
MAIN = {"augment": True, "conv_stem": False}  # the ablation's own arms; the other two axes branch off the best ratio
ALPHA = 0.05


def _key(arm: dict) -> tuple:
    p = arm["params"]
    return bool(p["augment"]), bool(p["conv_stem"]), float(p["unfreeze_ratio"])


def _zoo(arm: dict) -> int:
    return int(arm["params"].get("zoo_seed", 0))


SELECTION_SEEDS = (0, 1, 2)  # the seeds every ratio runs with (experiments.SEEDS)


def _selection_runs(arms: list[dict]) -> list[dict]:
    """The runs a choice is made on: the default zoo build, the seeds every arm has."""
    return [a for a in arms if not _zoo(a) and a["params"]["seed"] in SELECTION_SEEDS]


def best_ratio(run_dirs: list[Path]) -> float:
    """The ratio with the highest mean *validation* ROUGE-L among the main arms (augment on, no stem), over
    the seeds every ratio has (`SELECTION_SEEDS`) on the default zoo build; ties go to the smaller ratio (fewer
    trainable parameters). Test never enters the choice, and the choice never moves when the chosen ratio's
    further seeds arrive (averaging in more seeds for some ratios only would compare unequal means)."""
    scores: dict[float, list[float]] = {}
    for a in _selection_runs(load_arms(run_dirs)):
        if (a["params"]["augment"], a["params"]["conv_stem"]) == (True, False) and "val" in a["train"]["metrics"]:
            scores.setdefault(float(a["params"]["unfreeze_ratio"]), []).append(a["train"]["metrics"]["val"]["rougeL"])
    if not scores:
        raise ValueError("no finished main arms (augment=True, conv_stem=False) with validation scores to pick the best ratio from")
    means = {r: float(np.mean(v)) for r, v in scores.items()}
    top = max(means.values())
    return min(r for r, m in means.items() if m == top)


class Arms:
    """The finished arms, grouped by (augment, conv_stem, ratio), with their per-question scores as
    (runs x questions) arrays and the test questions they answer (read once, checked for every arm). A
    run is one (zoo build, seed); runs are ordered by both, so two groups with the same runs pair run k
    with run k, and the runs of both zoo builds are resampled together in every interval."""

    def __init__(self, run_dirs: list[Path]):
        # imported here: heavy: tables only
        import pandas as pd

        # The questions are the same for every arm (one seeded generator per split); git keeps them beside the
        # default arm only.
        self.arms, df = scored_arms(run_dirs, "MedBLIP")
        self.test = df[df.split == "test"].reset_index(drop=True)
        self.studies = self.test.study.tolist()
        self.rows = {}
        for a in self.arms:
            rows = pd.read_csv(a["dir"] / "per_sample.csv.gz")
            test = rows[rows.split == "test"].reset_index(drop=True)
            if len(test) != len(self.test):
                raise ValueError(f"{a['dir']}: {len(test)} test scores, but the evaluation items list {len(self.test)}; re-run it")
            self.rows[a["dir"]] = {"test": test, "val": rows[rows.split == "val"].reset_index(drop=True)}
        self.groups: dict[tuple, list[dict]] = {}
        for a in sorted(self.arms, key=lambda a: (_zoo(a), a["params"]["seed"])):
            self.groups.setdefault(_key(a), []).append(a)

    def scores(self, key: tuple, part: str = "test", metric: str = "rougeL", closed: bool = False, zoo=None,
               runs: list[dict] | None = None) -> np.ndarray:
        """(runs x questions) of one metric; `part`: "test", "test_shuffled", "test_prior" or "val"; `zoo`: one build's
        runs only; `runs`: only the runs of these (zoo build, seed)s, those of another arm, say, to pair with it."""
        split, prefix = ("val", "") if part == "val" else ("test", {"test": "", "test_shuffled": "shuffled_", "test_prior": "prior_"}[part])
        wanted = None if runs is None else {(_zoo(a), a["params"]["seed"]) for a in runs}
        rows = np.array([self.rows[a["dir"]][split][prefix + metric].to_numpy() for a in self.groups[key]
                         if (zoo is None or _zoo(a) == zoo) and (wanted is None or (_zoo(a), a["params"]["seed"]) in wanted)], dtype=float)
        return rows[:, self.closed] if closed else rows

    @property
    def closed(self) -> np.ndarray:
        return np.flatnonzero(self.test.answer.isin(["yes", "no"]).to_numpy())

    def studies_of(self, closed: bool) -> list:
        return [self.studies[i] for i in self.closed] if closed else self.studies


def _compare(arms: Arms, name: str, a: np.ndarray, b: np.ndarray, metric: str, closed: bool) -> dict:
    d = paired_study_bootstrap(a, b, arms.studies_of(closed))
    return {"claim": name, "metric": metric, "difference": d["diff"], "ci_lo": d["lo"], "ci_hi": d["hi"], "p": d["p"],
            "seeds": f"{d['seeds_a']} vs {d['seeds_b']}", "studies": d["studies"]}


def aggregate(run_dirs: list[Path], out_dir: Path):
    """All finished arms -> `summary`, `claims` (paired, Holm-corrected), `axes_at_best`, `presence_by_finding`,
    `answer_concentration`, `linear_probe`, `verdict.md` and the figures."""
    # imported here: heavy: tables only
    import pandas as pd

    arms = Arms(run_dirs)

    write = partial(write_table, out_dir)  # (name, frame, title)

    rows = []
    for key, group in sorted(arms.groups.items()):
        aug, stem, ratio = key
        r = study_bootstrap(arms.scores(key), arms.studies)
        c = study_bootstrap(arms.scores(key, metric="exact_match", closed=True), arms.studies_of(True))
        sr = study_bootstrap(arms.scores(key, "test_shuffled"), arms.studies)
        sc = study_bootstrap(arms.scores(key, "test_shuffled", "exact_match", closed=True), arms.studies_of(True))
        rows.append({"augment": aug, "conv_stem": stem, "unfreeze_ratio": ratio, "seeds": len({a["params"]["seed"] for a in group}),
                     "zoo_builds": len({_zoo(a) for a in group}), "runs": len(group),
                     "trainable_params": group[0]["train"].get("trainable_params"),
                     # the mean the best ratio is chosen on (best_ratio), not over every run of the arm
                     "val_rougeL": float(np.mean([a["train"]["metrics"]["val"]["rougeL"] for a in _selection_runs(group)] or [np.nan])),
                     "rougeL": r["mean"], "rougeL_lo": r["lo"], "rougeL_hi": r["hi"],
                     "rougeL_seed_sd": float(np.std(arms.scores(key, zoo=0).mean(1), ddof=1)) if len(arms.scores(key, zoo=0)) > 1 else float("nan"),
                     "closed_accuracy": c["mean"], "closed_lo": c["lo"], "closed_hi": c["hi"],
                     "shuffled_rougeL": sr["mean"], "shuffled_closed_accuracy": sc["mean"],
                     "minutes_per_arm": float(np.mean([a["duration_s"] for a in group]) / 60)})
    summary = pd.DataFrame(rows)
    write("summary", summary, "MedBLIP arms on the test split: mean over runs (a run is one seed on one zoo build; `zoo_builds` 2: "
          "the arm also ran on a second build of the tiny zoo); `_lo`/`_hi` are 95 % intervals from a bootstrap "
          "that resamples test studies and runs together; `rougeL_seed_sd`: the spread over seeds on the default zoo; `val_rougeL`: validation ROUGE-L over seeds 0-2 on the default zoo build, what the best ratio is chosen on; "
          "`shuffled_` is the same model with every test study given another study's image. Closed accuracy: the yes / no "
          "questions.")

    main = summary[summary.augment & ~summary.conv_stem]
    if main.empty:
        return summary
    best = best_ratio([a["dir"] for a in arms.arms])
    bkey = (True, False, best)
    prior_r = arms.scores(bkey, "test_prior")[0]  # the prior has no seed: every run holds the same scores
    prior_c = arms.scores(bkey, "test_prior", "exact_match", closed=True)[0]
    pr, pc = study_bootstrap(prior_r, arms.studies), study_bootstrap(prior_c, arms.studies_of(True))
    fileio.write_text(out_dir / "question_prior.md", "The question-string prior (the most common training answer to each "
                      f"test question's string, no image) on test: ROUGE-L {pr['mean']:.4f} [{pr['lo']:.4f}, {pr['hi']:.4f}], "
                      f"closed accuracy {pc['mean']:.4f} [{pc['lo']:.4f}, {pc['hi']:.4f}].\n")

    # The claims the verdict rests on, tested together (Holm).
    claims = []
    for metric, closed in (("rougeL", False), ("exact_match", True)):
        label = "ROUGE-L" if metric == "rougeL" else "closed accuracy"
        b = arms.scores(bkey, metric=metric, closed=closed)
        claims.append(_compare(arms, f"best ({best:g}) - image-shuffled control", b,
                               arms.scores(bkey, "test_shuffled", metric, closed), label, closed))
        claims.append(_compare(arms, f"best ({best:g}) - question-string prior", b, (prior_r if not closed else prior_c)[None],
                               label, closed))
    ratio_pairs = [(PAPER_RATIO, 0.0), (PAPER_RATIO, 1.0)] + ([(best, PAPER_RATIO)] if best != PAPER_RATIO else [])
    for hi_r, lo_r in ratio_pairs:
        if (True, False, hi_r) in arms.groups and (True, False, lo_r) in arms.groups:
            claims.append(_compare(arms, f"ratio {hi_r:g} - ratio {lo_r:g}", arms.scores((True, False, hi_r)),
                                   arms.scores((True, False, lo_r)), "ROUGE-L", False))
    claims = pd.DataFrame(claims)
    claims["p_holm"] = holm(claims.p)
    claims["holds"] = (claims.p_holm < ALPHA) & (claims.difference > 0)
    write("claims", claims, "Paired differences on the same test questions (first minus second), 95 % intervals from a bootstrap "
          "over test studies and seeds (seed k beside seed k); two-sided p from the same resamples, Holm-corrected over all rows "
          "(`p_holm`). `holds`: the difference is above 0 after correction.")

    axes = []
    for name, key in (("augmentation off", (False, False, best)), ("conv stem on", (True, True, best))):
        if key in arms.groups:
            # the main arm's runs of the same (zoo build, seed)s only: its second build's runs have no partner here
            axes.append(_compare(arms, f"{name} - main arm, ratio {best:g}", arms.scores(key),
                                 arms.scores(bkey, runs=arms.groups[key]), "ROUGE-L", False))
    if axes:
        axes = pd.DataFrame(axes)
        axes["p_holm"] = holm(axes.p)
        write("axes_at_best", axes, "The two further axes at the best ratio: the changed arm minus the main arm (augmentation on, "
              "no conv stem), paired as in `claims`, Holm-corrected over these rows.")

    zoo_rows = []
    for key in sorted(arms.groups):
        if len({_zoo(a) for a in arms.groups[key]}) > 1:
            for metric, closed, label in (("rougeL", False, "ROUGE-L"), ("exact_match", True, "closed accuracy")):
                z0, z1 = arms.scores(key, metric=metric, closed=closed, zoo=0), arms.scores(key, metric=metric, closed=closed, zoo=1)
                d = paired_study_bootstrap(z1, z0, arms.studies_of(closed))
                zoo_rows.append({"augment": key[0], "conv_stem": key[1], "unfreeze_ratio": key[2], "metric": label,
                                 "zoo_0": float(z0.mean()), "zoo_1": float(z1.mean()), "difference": d["diff"],
                                 "ci_lo": d["lo"], "ci_hi": d["hi"], "seeds": f"{len(z0)} vs {len(z1)}"})
    zoo_spread = pd.DataFrame(zoo_rows)
    if not zoo_spread.empty:
        write("zoo_spread", zoo_spread, "The arms the verdict rests on, run on two builds of the tiny zoo (the same recipe, zoo seed 0 "
              "and 1): build 1 minus build 0, paired by seed, with a bootstrap over test studies and seeds. The `claims` "
              "pool both builds, so this spread is inside their intervals.")

    # The same claims on each zoo build alone: a pooled claim can rest on one build.
    by_build = []
    pairs = [(f"best ({best:g}) - image-shuffled control", bkey, None)] + \
        [(f"ratio {h:g} - ratio {lo:g}", (True, False, h), (True, False, lo)) for h, lo in ratio_pairs
         if (True, False, h) in arms.groups and (True, False, lo) in arms.groups]
    builds = sorted({_zoo(a) for a in arms.arms})
    for claim, key_a, key_b in pairs:
        for z in builds:
            a = arms.scores(key_a, zoo=z)
            b = arms.scores(key_a, "test_shuffled", zoo=z) if key_b is None else arms.scores(key_b, zoo=z)
            if len(a) and len(b) == len(a):
                d = paired_study_bootstrap(a, b, arms.studies)
                by_build.append({"claim": claim, "metric": "ROUGE-L", "zoo_seed": z, "runs": len(a), "difference": d["diff"],
                                 "ci_lo": d["lo"], "ci_hi": d["hi"]})
    by_build = pd.DataFrame(by_build, columns=["claim", "metric", "zoo_seed", "runs", "difference", "ci_lo", "ci_hi"])
    if len(builds) > 1:
        write("claims_by_build", by_build, "The ROUGE-L claims of `claims` on each build of the tiny zoo alone (paired as there, "
              "not Holm-corrected): a claim that holds on the pooled runs but not on every build rests partly on one build.")

    presence = _presence_table(arms, bkey, prior_c)
    write("presence_by_finding", presence, f"Accuracy on \"is there X?\" per finding at the best ratio ({best:g}; mean over seeds), "
          "for the model, the same model with shuffled images, and the question-string prior (0.5 by construction: each "
          "finding is asked as often of studies without it as of studies with it). `gap`: model minus shuffled.")
    concentration = _concentration(arms, bkey, out_dir, write)
    probe = next((a["dir"] / "linear_probe.csv" for a in arms.groups[bkey] if (a["dir"] / "linear_probe.csv").exists()), None)
    if probe is not None:
        if probe.with_suffix(".png").exists():
            fileio.write_with(out_dir / "linear_probe.png", lambda p: p.write_bytes(probe.with_suffix(".png").read_bytes()))
        write("linear_probe", pd.read_csv(probe), "Linear probe of the frozen ViT (the same for every arm): per finding, validation "
              "AUC of a logistic regression on the mean patch token fit on the training studies. The ceiling of what any "
              "unfreeze ratio can read.")
    per_build = by_build if len(builds) > 1 else None
    fileio.write_text(out_dir / "verdict.md", verdict(summary, claims, best, presence, zoo_spread, concentration, per_build))
    fileio.write_text(out_dir / "headline.json", json.dumps(headline(summary, claims, best, per_build), indent=1) + "\n")
    curve = _ratio_curve(arms)
    write("ratio_curve", curve, "The ratio curve the figure draws: every main arm (augmentation on, no stem) on the default zoo build "
          "only, so each ratio's mean is over the same build (the `summary` of the arms with five seeds also pools the second "
          "build's runs); intervals resample test studies and that build's runs.")
    _figures(curve, presence, pr, pc, best, out_dir)
    return summary


def _ratio_curve(arms: Arms):
    """Per ratio, on the default zoo build: test ROUGE-L and closed accuracy with intervals, the shuffled control's,
    and the validation mean the best ratio is chosen on."""
    # imported here: heavy: tables only
    import pandas as pd

    rows = []
    for key, group in sorted(arms.groups.items()):
        if key[:2] != (True, False) or not len(arms.scores(key, zoo=0)):
            continue
        r, c = study_bootstrap(arms.scores(key, zoo=0), arms.studies), \
            study_bootstrap(arms.scores(key, metric="exact_match", closed=True, zoo=0), arms.studies_of(True))
        rows.append({"unfreeze_ratio": key[2], "seeds": sum(not _zoo(a) for a in group),
                     "val_rougeL": float(np.mean([a["train"]["metrics"]["val"]["rougeL"] for a in _selection_runs(group)] or [np.nan])),
                     "rougeL": r["mean"], "rougeL_lo": r["lo"], "rougeL_hi": r["hi"],
                     "closed_accuracy": c["mean"], "closed_lo": c["lo"], "closed_hi": c["hi"],
                     "shuffled_rougeL": float(arms.scores(key, "test_shuffled", zoo=0).mean()),
                     "shuffled_closed_accuracy": float(arms.scores(key, "test_shuffled", "exact_match", closed=True, zoo=0).mean())})
    return pd.DataFrame(rows)


def _presence_table(arms: Arms, bkey: tuple, prior_closed: np.ndarray):
    # imported here: heavy: tables only
    import pandas as pd

    test = arms.test
    sel = np.flatnonzero((test.question_type == "presence").to_numpy() & test.question.str.startswith("is there ").to_numpy())
    finding = test.question[sel].str[len("is there "):].str.rstrip("?").to_numpy()
    model = arms.scores(bkey, metric="exact_match")[:, sel].mean(0)
    shuffled = arms.scores(bkey, "test_shuffled", "exact_match")[:, sel].mean(0)
    prior = arms.scores(bkey, "test_prior", "exact_match")[0][sel]
    df = pd.DataFrame({"finding": finding, "model": model, "shuffled": shuffled, "prior": prior,
                       "yes": (test.answer.to_numpy()[sel] == "yes").astype(int)})
    out = df.groupby("finding").agg(questions=("model", "size"), yes=("yes", "sum"), model=("model", "mean"),
                                    shuffled=("shuffled", "mean"), prior=("prior", "mean")).reset_index()
    out["gap"] = out.model - out.shuffled
    return out.sort_values("questions", ascending=False).reset_index(drop=True)


def _concentration(arms: Arms, bkey: tuple, out_dir: Path, write):
    """The best arm's answer concentration per question type and run (None where no arm wrote one)."""
    # imported here: heavy: tables only
    import pandas as pd

    frames = [pd.read_csv(a["dir"] / "answer_concentration.csv").assign(zoo_seed=_zoo(a), seed=a["params"]["seed"])
              for a in arms.groups[bkey] if (a["dir"] / "answer_concentration.csv").exists()]
    if not frames:
        return None
    table = pd.concat(frames)
    write("answer_concentration", table, "How varied the best arm's answers are, per question type and run: its most common "
          "answer and that answer's share, beside the references'. A share near 1 where the references vary is one answer "
          "for every image.")
    return table


DEGENERATE_SHARE = 0.95  # one answer for (nearly) every image ...
VARIED_REFERENCE = 0.80  # ... where no reference answer is that common


def degenerate(concentration):
    """The question types some run answers with one answer for DEGENERATE_SHARE of its images, where no reference
    answer is VARIED_REFERENCE common: how many runs, of how many, and the answer. Counted per run, never on the
    mean over runs: one zoo build's runs answering one thing is degenerate even where the other build's vary."""
    # imported here: heavy: tables only
    import pandas as pd

    stuck = concentration[(concentration.top_prediction_share >= DEGENERATE_SHARE)
                          & (concentration.top_reference_share < VARIED_REFERENCE)]
    runs = concentration.groupby("question_type").size()
    return pd.DataFrame([{"question_type": qt, "runs": len(g), "of_runs": int(runs[qt]), "answer": Counter(g.top_prediction.fillna("")).most_common(1)[0][0],
                          "reference_share": float(g.top_reference_share.iloc[0])} for qt, g in stuck.groupby("question_type", sort=False)],
                        columns=["question_type", "runs", "of_runs", "answer", "reference_share"])


def _claim_row(claims, prefix: str, metric: str = "ROUGE-L"):
    r = claims[claims.claim.str.startswith(prefix) & (claims.metric == metric)]
    return None if r.empty else r.iloc[0]


def _ratio_rows(claims, best: float):
    """The paired ROUGE-L rows 0.3125 - 0, 0.3125 - 1 and best - 0.3125 (each None when absent)."""
    return (_claim_row(claims, f"ratio {PAPER_RATIO:g} - ratio 0"), _claim_row(claims, f"ratio {PAPER_RATIO:g} - ratio 1"),
            _claim_row(claims, f"ratio {best:g} - ratio {PAPER_RATIO:g}"))


def _reads_image(claims) -> bool:
    """Every difference to the image-shuffled control holds after correction."""
    image = claims[claims.claim.str.contains("image-shuffled")]
    return bool(len(image)) and bool(image.holds.all())


def paper_claim_state(r0, r1, rb, best: float) -> str:
    """The paper's claim (partial unfreezing beats 0 % and 100 %, best near 31.25 %) from the paired rows
    0.3125 - 0, 0.3125 - 1 and best - 0.3125 (None when best is 0.3125): holds, fails, partly holds or plateau."""
    beats = bool(r0.holds and r1.holds)
    worse = bool(((r0.p_holm < ALPHA) & (r0.difference < 0)) or ((r1.p_holm < ALPHA) & (r1.difference < 0)))
    near = rb is None or rb.p_holm >= ALPHA or abs(best - PAPER_RATIO) <= 0.0625
    if beats and near:
        return "holds"
    if worse:
        return "fails"
    return "partly holds" if beats else "plateau"


def weak_on_one_build(rows, by_build) -> list[str]:
    """The claims among `rows` whose interval reaches 0 on one zoo build alone (`claims_by_build`)."""
    if by_build is None or by_build.empty:
        return []
    return [r.claim for r in rows if r is not None and (by_build[by_build.claim == r.claim].ci_lo <= 0).any()]


def headline(summary, claims, best: float, by_build=None) -> dict:
    """The row of the front table in results/README.md, computed from the same tables as the verdict."""
    r0, r1, rb = _ratio_rows(claims, best)
    main = summary[summary.augment & ~summary.conv_stem]
    b = main[main.unfreeze_ratio == best].iloc[0]
    reads = _reads_image(claims)
    state = paper_claim_state(r0, r1, rb, best) if r0 is not None and r1 is not None else "not tested"
    # yes only when the claim holds on a model shown to use the image; a claim about fitting the questions is partly
    word = {"holds": "yes" if reads else "partly", "partly holds": "partly"}.get(state, "no")
    parts = [f"best ratio on validation {best:g}: test ROUGE-L {b.rougeL:.3f} [{b.rougeL_lo:.3f}, {b.rougeL_hi:.3f}]"]
    parts += [f"{r.claim}: {r.difference:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]" for r in (r0, r1, rb) if r is not None]
    weak = weak_on_one_build((r0, r1), by_build)
    if weak:
        parts.append("on the pooled runs of both zoo builds (" + "; ".join(weak) + " reaches 0 on one build alone)")
    parts.append("uses the image (beats its image-shuffled control)" if reads else "not shown to use the image")
    return {"paper": "MedBLIP", "claim": "unfreezing part of the LLM's fully connected layers beats 0 % and 100 %; best at 31.25 %",
            "paper_number": "ROUGE-L 66.12 % at 31.25 % (Medical-Diff-VQA, OPT-2.7B)", "finds": "; ".join(parts),
            "state": state, "reproduced": word, "notebook": "notebooks/01_medblip_unfreeze_ratio.ipynb",
            "figure": "rougeL_vs_ratio.png"}


def verdict(summary, claims, best: float, presence, zoo_spread=None, concentration=None, by_build=None) -> str:
    """What the numbers say, in words computed from them (so it cannot drift from the tables)."""
    def said(r):
        return (f"{r.difference:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}], Holm p = {r.p_holm:.3g}")

    main = summary[summary.augment & ~summary.conv_stem]
    b = main[main.unfreeze_ratio == best].iloc[0]
    lines = ["Computed by `medlib.experiments.medblip_results.verdict` from `summary`, `claims` and `presence_by_finding`.", "",
             f"- **Best ratio, chosen on validation**: {best:g} ({int(b.seeds)} seeds x {int(b.zoo_builds)} zoo build(s)): test ROUGE-L {b.rougeL:.3f} "
             f"[{b.rougeL_lo:.3f}, {b.rougeL_hi:.3f}], closed accuracy {b.closed_accuracy:.3f} [{b.closed_lo:.3f}, {b.closed_hi:.3f}]."]
    for metric in ("ROUGE-L", "closed accuracy"):
        for what in ("image-shuffled control", "question-string prior"):
            r = claims[claims.claim.str.contains(what) & (claims.metric == metric)]
            if r.empty:
                continue
            r = r.iloc[0]
            lines.append(f"- Best minus the {what}, {metric}: {said(r)}: "
                         f"{'above 0, the target holds' if r.holds else 'NOT above 0: the target is not met'}.")
    reads = _reads_image(claims)
    lines.append(f"- **Does the model use the image?** {'Yes' if reads else 'Not shown'}: "
                 + ("both image-shuffled differences are above 0 after correction." if reads else
                    "at least one difference to the image-shuffled control is not above 0, so the answers cannot be said "
                    "to come from the image."))
    read = presence[presence.gap > 0.1]
    lines.append(f"- Per finding (presence questions, best ratio): the model beats its shuffled-image self by more than 0.1 on "
                 f"{len(read)} of {len(presence)} findings"
                 + (f" ({', '.join(read.finding.head(8))})" if len(read) else "") + "; see `presence_by_finding`.")
    if concentration is not None and len(concentration):
        stuck = degenerate(concentration)
        lines.append("- **Degenerate answers**: " + (
            "; ".join(f"`{r.question_type}` questions get one answer for {DEGENERATE_SHARE:.0%} or more of the images in {r.runs} of "
                      f"{r.of_runs} runs (\"{r.answer}\"; the most common reference answer is {r.reference_share:.0%})"
                      for r in stuck.itertuples())
            + ": one answer for every image, whatever the ratio's average says." if len(stuck) else
            f"no question type gets one answer for {DEGENERATE_SHARE:.0%} or more of its images in any run (see `answer_concentration`)."))
    r0, r1, rb = _ratio_rows(claims, best)
    for r in (r0, r1, rb):
        if r is not None:
            lines.append(f"- {r.claim}: {said(r)}.")
    if r0 is not None and r1 is not None:
        state = {"holds": "**holds**: 31.25 % beats both 0 % and 100 % after correction, and no ratio is clearly better",
                 "fails": "**fails**: 0 % or 100 % is better than 31.25 % after correction",
                 "partly holds": f"**partly holds**: 31.25 % beats 0 % and 100 %, but {best:g} is better still",
                 "plateau": "**cannot be told apart (a plateau)**: 31.25 % is not different from 0 % and 100 % after "
                            "correction"}[paper_claim_state(r0, r1, rb, best)]
        beats = bool(r0.holds and r1.holds)
        if beats:
            weak = weak_on_one_build((r0, r1), by_build)
            if weak:
                state += ("; so on the pooled runs of both zoo builds, not on each build alone (" + "; ".join(f"`{c}`" for c in weak)
                          + " reaches 0 on one build, `claims_by_build`)")
        lines.append(f"- The paper's claim (partial unfreezing beats 0 % and 100 %, best near 31.25 %) {state}."
                     + ("" if reads else " Without evidence that the answers use the image, this says nothing about "
                        "how the image is read, only about fitting the questions."))
    spread = main.rougeL.max() - main.rougeL.min()
    seed_sd = main.rougeL_seed_sd.dropna()  # one-seed arms have no spread
    seed_text = f"the median seed spread (sd) is {seed_sd.median():.3f}" if len(seed_sd) else "no arm has two seeds"
    lines.append(f"- Across ratios the test ROUGE-L spans {spread:.3f}; {seed_text}. The paper reports 66.12 % ROUGE-L at 31.25 % on Medical-Diff-VQA "
                 "with OPT-2.7B; tiny models on rendered images are not comparable in level, only in shape.")
    if zoo_spread is not None and not zoo_spread.empty:
        zr = zoo_spread[zoo_spread.metric == "ROUGE-L"]
        ratio_rows = claims[claims.claim.str.startswith("ratio")]
        largest = float(ratio_rows.difference.abs().max()) if len(ratio_rows) else float("nan")
        lines.append(f"- **Rebuilding the zoo** (a second build, {len(zr)} arms x {zr.seeds.iloc[0]} seeds) moves an arm's test "
                     f"ROUGE-L by up to {zr.difference.abs().max():.3f} (median {zr.difference.abs().median():.3f}); the largest "
                     f"difference between ratios above is {largest:.3f}. Every interval in `claims` resamples the runs of both "
                     "builds." + _per_build(claims, by_build))
    else:
        lines.append("- Only one zoo build ran: the intervals hold the seed and study spread, not the spread between zoo builds.")
    one_seed = summary[summary.seeds < 2]
    if len(one_seed):
        lines.append(f"- {len(one_seed)} arm(s) ran with one seed only; their intervals hold the study spread, not the seed spread.")
    return "\n".join(lines) + "\n"


def _per_build(claims, by_build) -> str:
    """The verdict's words on each build alone: which pooled claims hold on every build, which on some only."""
    if by_build is None or by_build.empty:
        return ""
    held = claims[claims.holds & (claims.metric == "ROUGE-L")].claim
    parts, partial = [], []
    for claim in held:
        rows = by_build[by_build.claim == claim]
        if rows.empty:
            continue
        parts.append(f"{claim}: " + ", ".join(f"build {int(r.zoo_seed)} {r.difference:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]"
                                                for r in rows.itertuples()))
        if (rows.ci_lo <= 0).any():
            partial.append(claim)
    if not parts:
        return ""
    verdict_text = ("Each of these claims also holds on each build alone" if not partial else
                    "On one build alone the interval of " + "; ".join(f"`{c}`" for c in partial) + " reaches 0: that claim "
                    "rests partly on the other build")
    return f" On each build alone (ROUGE-L, `claims_by_build`): {'; '.join(parts)}. {verdict_text}."


def _figures(curve, presence, pr: dict, pc: dict, best: float, out_dir: Path) -> None:
    # imported here: heavy: figures only
    import matplotlib

    matplotlib.use("Agg")
    # imported here: heavy: figures only
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    main = curve.sort_values("unfreeze_ratio")
    x = main.unfreeze_ratio * 100
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, (col, lo, hi, shuf, prior, name) in zip(axes, [
            ("rougeL", "rougeL_lo", "rougeL_hi", "shuffled_rougeL", pr, "ROUGE-L"),
            ("closed_accuracy", "closed_lo", "closed_hi", "shuffled_closed_accuracy", pc, "closed (yes / no) accuracy")]):
        ax.plot(x, main[col] * 100, "o-", color="C0", label="fine-tuned (test, mean over seeds, default zoo build)")
        ax.fill_between(x, main[lo] * 100, main[hi] * 100, color="C0", alpha=0.2, label="95 % interval (studies x seeds)")
        ax.plot(x, main[shuf] * 100, "s--", color="C1", label="same model, shuffled images")
        ax.axhline(prior["mean"] * 100, color="0.3", ls="-.", lw=1, label="question-string prior")
        if col == "rougeL":
            ax.plot(x, main.val_rougeL * 100, "^:", color="C2", label="validation (chooses the best ratio)")
        ax.axvline(PAPER_RATIO * 100, color="C3", ls="--", lw=1, label="paper's best (31.25 %)")
        ax.axvline(best * 100, color="C2", ls=":", lw=1.5, label=f"best on validation ({best * 100:g} %)")
        ax.set_xlabel("share of OPT decoder layers with fc1/fc2 unfrozen (%)")
        ax.set_ylabel(f"{name} (%)")
        ax.set_title(name)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("MedBLIP unfreeze-ratio ablation (tiny profile, SynthCXR-IU VQA, test split)")
    write_figure(fig, out_dir / "rougeL_vs_ratio.png", (curve, pr, pc, best))
    plt.close(fig)

    long = presence.melt(id_vars=["finding"], value_vars=["model", "shuffled", "prior"], var_name="system", value_name="accuracy")
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(presence) + 1.2))
    sns.barplot(data=long, y="finding", x="accuracy", hue="system", ax=ax, palette=["C0", "C1", "0.6"])
    ax.axvline(0.5, color="0.3", ls=":", lw=1)
    ax.set_xlim(0, 1)
    ax.set_title(f"'is there X?' accuracy per finding, best ratio {best:g} (test)")
    ax.legend(fontsize=7, loc="lower right")
    write_figure(fig, out_dir / "presence_by_finding.png", presence)
    plt.close(fig)

