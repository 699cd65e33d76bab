"""Claims: what a paper states, split into parts, each decided by one paired comparison, and the one word
the front table prints for it.

A claim is written in code before the runs that decide it (each experiment's `CLAIMS`). Each part compares
two arms on the same test items, in the paper's direction. The word comes from the parts only:

- **reproduced**: every part holds: Holm's procedure over the parts rejects "no difference" for it, its
  interval at the level Holm tests it at excludes 0 in the paper's direction, and the mean difference has
  the paper's sign on every zoo build;
- **not reproduced**: some part is reversed: Holm rejects and its interval excludes 0 in the other direction;
- **partly**: some parts hold, none is reversed (the table names which hold);
- **inconclusive**: no part separates.
A part named a *check* (the model beats its image-shuffled control, say) is not the paper's claim but what
makes it mean something: when a check does not hold, the word is at most "partly".

Intervals come from a hierarchical bootstrap: zoo builds are resampled, then seeds within each drawn build,
then test studies, the same studies for both arms (the pairing). The zoo build is the outer unit because it
is what differs between machines; a mixed model with the build as a random effect would estimate a variance
from three builds, which a percentile interval does not pretend to. The p-value beside each part is an exact
sign-flip test over the paired runs (a run is one seed on one build; each run's mean difference keeps or flips
its sign), valid with few units; Holm's procedure ranks the parts by it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
WORDS = ("reproduced", "partly", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class Part:
    """One paired comparison: arm `a` minus arm `b` on `metric`, expected to have the sign of `direction`."""
    key: str
    wording: str
    a: str
    b: str
    metric: str = "rougeL"
    direction: int = 1
    paper_effect: float | None = None  # the paper's own a - b, where it gives one
    check: bool = False  # what makes the claim mean something, not the claim itself


@dataclass(frozen=True)
class Claim:
    key: str
    paper: str
    wording: str
    parts: tuple[Part, ...]

    def part(self, key: str) -> Part:
        for p in self.parts:
            if p.key == key:
                return p
        raise KeyError(f"claim {self.key}: no part {key!r} (parts: {', '.join(p.key for p in self.parts)})")


@dataclass(frozen=True)
class Paired:
    """The per-item differences a - b of one part: (runs x items), each run's zoo build, each item's study."""
    diffs: np.ndarray
    builds: np.ndarray
    studies: np.ndarray

    def __post_init__(self):
        d = np.asarray(self.diffs, dtype=float)
        if d.ndim != 2 or d.shape[0] == 0 or d.shape[1] != len(self.studies) or len(self.builds) != d.shape[0]:
            raise ValueError(f"paired differences: {d.shape} for {len(self.builds)} runs and {len(self.studies)} items; "
                             "each run needs one difference per item")
        if np.isnan(d).any():
            raise ValueError(f"paired differences: {int(np.isnan(d).sum())} are NaN")

    def run_values(self, study_weights: np.ndarray | None = None) -> np.ndarray:
        """Each run's mean difference, or with `study_weights` (resamples x studies, in `np.unique` order of the
        study ids) each resample's: (resamples x runs)."""
        d = np.asarray(self.diffs, dtype=float)
        if study_weights is None:
            return d.mean(1)
        _, group = np.unique(np.asarray(self.studies), return_inverse=True)
        sums = np.stack([np.bincount(group, weights=row) for row in d])
        return (study_weights @ sums.T) / (study_weights @ np.bincount(group).astype(float))[:, None]


@dataclass(frozen=True)
class PairedCounts:
    """A part whose metric is a statistic of counts summed over items (CE-F1 over reports, say), not a mean of
    per-item scores: `a` and `b` are (runs x items x ...) counts; each run's difference is statistic(a) -
    statistic(b) over the items (over the resampled studies, in a bootstrap)."""
    a: np.ndarray
    b: np.ndarray
    builds: np.ndarray
    studies: np.ndarray
    statistic: object  # summed counts (..., *count shape) -> value (...)

    def __post_init__(self):
        a, b = np.asarray(self.a, dtype=float), np.asarray(self.b, dtype=float)
        if a.shape != b.shape or a.ndim < 2 or a.shape[0] == 0 or a.shape[1] != len(self.studies) or len(self.builds) != a.shape[0]:
            raise ValueError(f"paired counts: {a.shape} and {b.shape} for {len(self.builds)} runs and {len(self.studies)} "
                             "items; both arms need the same runs and items")

    def run_values(self, study_weights: np.ndarray | None = None) -> np.ndarray:
        _, group = np.unique(np.asarray(self.studies), return_inverse=True)
        one_hot = np.eye(group.max() + 1)[group]  # items x studies
        out = []
        for x in (self.a, self.b):
            x = np.asarray(x, dtype=float)
            per_study = np.tensordot(one_hot.T, x, axes=([1], [1])).swapaxes(0, 1)  # runs x studies x ...
            if study_weights is None:
                out.append(self.statistic(per_study.sum(1)))
            else:
                out.append(self.statistic(np.tensordot(study_weights, per_study, axes=([1], [1]))))  # resamples x runs
        return out[0] - out[1]


def hierarchical_bootstrap(paired: Paired | PairedCounts, num_resamples: int = 4000, seed: int = 0) -> tuple[float, np.ndarray]:
    """(the mean difference, its resampled means): builds drawn with replacement, then runs within each drawn
    build, then studies (shared by every run of a resample)."""
    builds = np.asarray(paired.builds)
    num_runs = len(builds)
    num_studies = len(np.unique(np.asarray(paired.studies)))
    names = np.unique(builds)
    rng = np.random.default_rng(seed)
    run_w = np.zeros((num_resamples, num_runs))
    chosen = rng.integers(0, len(names), size=(num_resamples, len(names)))
    for j in range(len(names)):  # each drawn build slot (a build drawn twice counts twice) ...
        for k, name in enumerate(names):  # ... filled, where it drew build k, with k's runs drawn with replacement
            rows, runs = np.flatnonzero(chosen[:, j] == k), np.flatnonzero(builds == name)
            picks = runs[rng.integers(0, len(runs), size=(len(rows), len(runs)))]
            np.add.at(run_w, (np.repeat(rows, len(runs)), picks.ravel()), 1.0 / len(runs))
    study_w = rng.multinomial(num_studies, np.full(num_studies, 1.0 / num_studies), size=num_resamples).astype(float)
    per_run = paired.run_values(study_w)  # resamples x runs
    means = (per_run * run_w).sum(1) / run_w.sum(1)
    return float(build_means(paired).mean()), means


def interval(paired: Paired | PairedCounts, num_resamples: int = 4000) -> tuple[float, float, float]:
    """(the mean difference, the ends of its 95 % hierarchical interval): a description, not a tested part."""
    mean, draws = hierarchical_bootstrap(paired, num_resamples)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return mean, float(lo), float(hi)


def build_means(paired: Paired | PairedCounts) -> np.ndarray:
    """Each build's mean difference (the mean over its runs of each run's difference), in build order."""
    runs, builds = paired.run_values(), np.asarray(paired.builds)
    return np.array([runs[builds == b].mean() for b in np.unique(builds)])


def sign_flip_p(run_means, max_exact: int = 16, num_resamples: int = 20000, seed: int = 0) -> float:
    """Two-sided p of an exact sign-flip test on the runs' mean differences (random flips above `max_exact` runs)."""
    x = np.asarray(run_means, dtype=float)
    if len(x) > max_exact:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(num_resamples, len(x)))
    else:
        signs = np.array(list(itertools.product([-1.0, 1.0], repeat=len(x))))
    stats = np.abs(signs @ x)
    return float(np.mean(stats >= abs(x.sum()) - 1e-12))


def holm(pvalues, alpha: float = ALPHA) -> tuple[list[float], list[bool]]:
    """Holm's step-down procedure: (the level each p-value is tested at, alpha / (m - rank) with rank 0 the
    smallest, and whether it is rejected). After the first p-value that fails its level none is rejected;
    they keep the level of the one that failed."""
    order = np.argsort(pvalues, kind="stable")
    levels, rejected, m, stopped = [0.0] * len(order), [False] * len(order), len(order), None
    for rank, i in enumerate(order):
        level = alpha / (m - rank) if stopped is None else stopped
        if stopped is None and pvalues[i] > level:
            stopped = level
        levels[i], rejected[i] = level, stopped is None
    return levels, rejected


@dataclass(frozen=True)
class PartResult:
    part: Part
    difference: float  # a - b, the mean over builds of each build's mean
    lo: float  # the interval at `level`
    hi: float
    level: float  # 1 - the Holm level the interval is taken at
    p: float  # sign-flip over runs
    rejected: bool  # by Holm's procedure over the claim's parts
    by_build: tuple[float, ...]
    runs: int
    builds: int

    @property
    def holds(self) -> bool:
        d = self.part.direction
        inside = self.lo > 0 if d > 0 else self.hi < 0
        return bool(self.rejected and inside and all(np.sign(b) == d for b in self.by_build))

    @property
    def reversed(self) -> bool:
        """The mirror of `holds`: Holm rejects, the interval excludes 0 against the paper's direction, and every build's
        mean has the other sign. A reversal resting on some builds only does not separate."""
        d = self.part.direction
        outside = self.hi < 0 if d > 0 else self.lo > 0
        return bool(self.rejected and outside and all(np.sign(b) == -d for b in self.by_build))

    @property
    def detectable(self) -> float:
        """The smallest difference this design could have told from 0: the interval's half-width."""
        return (self.hi - self.lo) / 2

    @property
    def state(self) -> str:
        return "holds" if self.holds else "reversed" if self.reversed else "does not separate"


def test_parts(claim: Claim, paired: dict[str, Paired | PairedCounts], alpha: float = ALPHA, num_resamples: int = 4000) -> list[PartResult]:
    """Every part of `claim` tested on its paired differences (`paired[part.key]`), Holm-corrected together."""
    missing = [p.key for p in claim.parts if p.key not in paired]
    if missing:
        raise ValueError(f"claim {claim.key}: no runs for part(s) {', '.join(missing)}")
    raw = []
    for k, part in enumerate(claim.parts):
        x = paired[part.key]
        run_means = x.run_values()
        diff, means = hierarchical_bootstrap(x, num_resamples, seed=k)
        raw.append((part, x, diff, means, sign_flip_p(run_means)))
    levels, rejected = holm([r[4] for r in raw], alpha)
    out = []
    for (part, x, diff, means, p), level, rej in zip(raw, levels, rejected):
        lo, hi = np.quantile(means, [level / 2, 1 - level / 2])
        out.append(PartResult(part, diff, float(lo), float(hi), 1 - level, p, rej, tuple(float(v) for v in build_means(x)),
                              len(x.builds), len(np.unique(x.builds))))
    return out


def word(results: list[PartResult]) -> str:
    """The claim's word from its tested parts (module docstring)."""
    claim = [r for r in results if not r.part.check]
    if any(r.reversed for r in claim):
        return "not reproduced"
    held = [r for r in claim if r.holds]
    if not held:
        return "inconclusive"
    if len(held) == len(claim) and all(r.holds for r in results if r.part.check):
        return "reproduced"
    return "partly"


def table(results: list[PartResult]):
    """One row per part: what the verdict, `headline.json` and the front table read."""
    # imported here: heavy: tables only
    import pandas as pd

    return pd.DataFrame([{
        "part": r.part.key, "wording": r.part.wording, "check": r.part.check, "a": r.part.a, "b": r.part.b,
        "metric": r.part.metric, "direction": r.part.direction, "difference": r.difference, "ci_lo": r.lo, "ci_hi": r.hi,
        "ci_level": r.level, "p_sign_flip": r.p, "holm_rejects": r.rejected, "detectable": r.detectable,
        "paper_effect": np.nan if r.part.paper_effect is None else r.part.paper_effect,
        "runs": r.runs, "zoo_builds": r.builds, **{f"build_{k}": v for k, v in enumerate(r.by_build)}, "state": r.state}
        for r in results])


def said(r: PartResult) -> str:
    """One part in words: its wording, the difference, interval, p, per-build estimates and state."""
    builds = ", ".join(f"{v:+.3f}" for v in r.by_build)
    paper = "" if r.part.paper_effect is None else f"; the paper's own difference {r.part.paper_effect:+.3f}"
    return (f"{r.part.wording}: {r.difference:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}] ({r.level:.1%} interval, Holm), "
            f"sign-flip p = {r.p:.3g} over {r.runs} runs; per build {builds}; smallest detectable ±{r.detectable:.3f}"
            f"{paper}: **{r.state}**")


def why(word_: str, results: list[PartResult]) -> str:
    """The reason for `word_`, in words, from the parts that decided it."""
    claim = [r for r in results if not r.part.check]
    held = [r.part.wording for r in claim if r.holds]
    failed_checks = [r.part.wording for r in results if r.part.check and not r.holds]
    return {"reproduced": "every part holds on the pooled runs and on each zoo build",
            "partly": f"{len(held)} of {len(claim)} parts {'holds' if len(held) == 1 else 'hold'} ({'; '.join(held)})"
                      + (f"; a check does not hold ({'; '.join(failed_checks)})" if failed_checks else ""),
            "not reproduced": "a part is reversed: " + "; ".join(r.part.wording for r in claim if r.reversed),
            "inconclusive": "no part separates from 0"}[word_]


def brief(results: list[PartResult]) -> list[str]:
    """Each part in a few words, then which hold: what a front-table row says of the claim."""
    held = [r.part.wording for r in results if r.holds and not r.part.check]
    return ([f"{r.part.wording}: {r.difference:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}] ({r.state})" for r in results]
            + [f"holds: {', '.join(held) if held else 'no part'}"])
