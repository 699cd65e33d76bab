"""Bootstrap confidence intervals for per-sample metrics and paired differences between arms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_array(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D list of per-sample scores, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: {int(np.isnan(arr).sum())} per-sample scores are NaN")
    return arr


def bootstrap_ci(values: Sequence[float], num_resamples: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Mean of `values` with a percentile bootstrap (1 - alpha) interval: {mean, lo, hi, n}."""
    arr = _as_array(values, "bootstrap_ci")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(num_resamples, arr.size))
    means = arr[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean": float(arr.mean()), "lo": float(lo), "hi": float(hi), "n": int(arr.size)}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], num_resamples: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> dict:
    """Mean of a - b over the same samples, its interval, and p = share of resamples with a - b <= 0."""
    x, y = _as_array(a, "paired_bootstrap a"), _as_array(b, "paired_bootstrap b")
    if x.size != y.size:
        raise ValueError(f"paired_bootstrap: arms scored {x.size} and {y.size} samples; pairs need the same samples")
    diff = x - y
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(num_resamples, diff.size))
    means = diff[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"diff": float(diff.mean()), "lo": float(lo), "hi": float(hi), "p_not_better": float((means <= 0).mean()),
            "n": int(diff.size)}


def bootstrap_statistic(rows, statistic, num_resamples: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
    """`statistic(rows)` with a percentile bootstrap interval over rows, for statistics that are not a
    mean of per-sample values (e.g. micro F1 from per-report counts): {value, lo, hi, n}."""
    arr = np.asarray(rows, dtype=float)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError("bootstrap_statistic: no rows to resample")
    rng = np.random.default_rng(seed)
    stats = [statistic(arr[rng.integers(0, len(arr), len(arr))]) for _ in range(num_resamples)]
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return {"value": float(statistic(arr)), "lo": float(lo), "hi": float(hi), "n": int(len(arr))}


def paired_bootstrap_statistic(a, b, statistic, num_resamples: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict:
    """statistic(a) - statistic(b) on the same rows, resampled together: {diff, lo, hi, n}."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"paired_bootstrap_statistic: arms have {len(x)} and {len(y)} rows; pairs need the same, non-empty rows")
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(num_resamples):
        idx = rng.integers(0, len(x), len(x))
        diffs.append(statistic(x[idx]) - statistic(y[idx]))
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return {"diff": float(statistic(x) - statistic(y)), "lo": float(lo), "hi": float(hi), "n": int(len(x))}


# -- studies and seeds: the unit a test set is sampled in, and the runs an arm repeats --------------

def _per_seed_study_sums(scores, studies) -> tuple[np.ndarray, np.ndarray]:
    """(seeds x studies) sums of per-item scores and each study's item count; `scores` is (items,) or
    (seeds, items), every seed scored on the same items in the same order."""
    arr = np.atleast_2d(np.asarray(scores, dtype=float))
    if arr.shape[-1] != len(studies) or arr.size == 0:
        raise ValueError(f"study bootstrap: {arr.shape[-1]} scores per seed but {len(studies)} study ids; "
                         "every seed must score the same items")
    if np.isnan(arr).any():
        raise ValueError(f"study bootstrap: {int(np.isnan(arr).sum())} per-item scores are NaN")
    _, group = np.unique(np.asarray(studies), return_inverse=True)
    sums = np.stack([np.bincount(group, weights=row) for row in arr])
    return sums, np.bincount(group).astype(float)


def _resampled_means(sums, counts, study_w, seed_w) -> np.ndarray:
    """Each resample's mean over its seeds of the item mean over its studies (weights = draw counts)."""
    per_seed = (study_w @ sums.T) / (study_w @ counts)[:, None]  # resamples x seeds
    return (per_seed * seed_w).sum(1) / seed_w.sum(1)


def _draws(rng, n: int, num_resamples: int) -> np.ndarray:
    """How often each of n units is drawn in each resample (a multinomial: n draws with replacement)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=num_resamples).astype(float)


def study_bootstrap(scores, studies, num_resamples: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """Mean over seeds of the per-item mean, with a bootstrap interval that resamples test *studies*
    (the questions or findings of one study are not independent) and, with several seeds, the seeds too
    (so the spread between training runs is in the interval): {mean, lo, hi, studies, seeds}."""
    sums, counts = _per_seed_study_sums(scores, studies)
    rng = np.random.default_rng(seed)
    means = _resampled_means(sums, counts, _draws(rng, len(counts), num_resamples),
                             _draws(rng, len(sums), num_resamples) if len(sums) > 1 else np.ones((num_resamples, 1)))
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    full = float((sums.sum(1) / counts.sum()).mean())
    return {"mean": full, "lo": float(lo), "hi": float(hi), "studies": int(len(counts)), "seeds": int(len(sums))}


def paired_study_bootstrap(a, b, studies, num_resamples: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """mean(a) - mean(b) on the same items, studies resampled together for both (that is the pairing);
    seeds resampled too, jointly where both have the same number (seed k of one arm beside seed k of the
    other), else each arm's own. Returns {diff, lo, hi, p, studies, seeds_a, seeds_b}; p is two-sided
    (the share of resamples on the other side of 0, doubled)."""
    sa, counts = _per_seed_study_sums(a, studies)
    sb, counts_b = _per_seed_study_sums(b, studies)
    rng = np.random.default_rng(seed)
    study_w = _draws(rng, len(counts), num_resamples)

    def seed_w(n):
        return _draws(rng, n, num_resamples) if n > 1 else np.ones((num_resamples, 1))

    wa = seed_w(len(sa))
    wb = wa if len(sa) == len(sb) else seed_w(len(sb))
    diffs = _resampled_means(sa, counts, study_w, wa) - _resampled_means(sb, counts_b, study_w, wb)
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    diff = float((sa.sum(1) / counts.sum()).mean() - (sb.sum(1) / counts.sum()).mean())
    tail = min((diffs <= 0).sum(), (diffs >= 0).sum())
    p = min(1.0, 2 * (tail + 1) / (num_resamples + 1))
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "p": float(p), "studies": int(len(counts)),
            "seeds_a": int(len(sa)), "seeds_b": int(len(sb))}


def holm(pvalues) -> list[float]:
    """Holm-adjusted p-values (family-wise error control) for the claims one verdict tests together."""
    # imported here: statsmodels is only needed where a verdict is computed
    from statsmodels.stats.multitest import multipletests

    p = list(pvalues)
    return [float(x) for x in multipletests(p, method="holm")[1]] if p else []


# -- statistics of summed counts (micro / macro F1): studies and seeds resampled the same way ----------

def _summed_counts(counts, study_w, seed_w) -> np.ndarray:
    """Each resample's counts summed over its drawn seeds and studies: (resamples, *count shape)."""
    flat = counts.reshape(counts.shape[0], counts.shape[1], -1)
    per_seed = np.einsum("rn,knc->rkc", study_w, flat, optimize=True)
    return np.einsum("rk,rkc->rc", seed_w, per_seed, optimize=True).reshape(len(study_w), *counts.shape[2:])


def _as_counts(counts, name: str) -> np.ndarray:
    arr = np.asarray(counts, dtype=float)
    if arr.ndim < 3 or arr.shape[1] == 0:
        raise ValueError(f"{name}: counts must be (seeds, studies, ...) with at least one study; got shape {arr.shape}")
    return arr


def study_count_bootstrap(counts, statistic, num_resamples: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """`statistic` (of counts summed over seeds and studies, vectorised over a leading axis) with a bootstrap
    interval resampling studies and, with several seeds, seeds: what `study_bootstrap` is for a mean, for a
    ratio of sums such as a micro F1. `counts`: (seeds, studies, ...), one item per study. Returns
    {value, lo, hi, studies, seeds}; the value is the statistic of every seed's counts pooled."""
    arr = _as_counts(counts, "study_count_bootstrap")
    rng = np.random.default_rng(seed)
    k, n = arr.shape[:2]
    values = statistic(_summed_counts(arr, _draws(rng, n, num_resamples), _draws(rng, k, num_resamples) if k > 1
                                      else np.ones((num_resamples, 1))))
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return {"value": float(statistic(arr.sum((0, 1))[None])[0]), "lo": float(lo), "hi": float(hi), "studies": int(n), "seeds": int(k)}


def paired_study_count_bootstrap(a, b, statistic, num_resamples: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """statistic(a) - statistic(b) on the same studies, resampled together (the pairing); seeds jointly where
    both have as many, else each its own (as `paired_study_bootstrap`). Returns {diff, lo, hi, p, ...}."""
    xa, xb = _as_counts(a, "paired_study_count_bootstrap"), _as_counts(b, "paired_study_count_bootstrap")
    if xa.shape[1:] != xb.shape[1:]:
        raise ValueError(f"paired_study_count_bootstrap: arms count {xa.shape[1:]} and {xb.shape[1:]}: pairs need the same studies")
    rng = np.random.default_rng(seed)
    study_w = _draws(rng, xa.shape[1], num_resamples)

    def seed_w(k):
        return _draws(rng, k, num_resamples) if k > 1 else np.ones((num_resamples, 1))

    wa = seed_w(len(xa))
    wb = wa if len(xa) == len(xb) else seed_w(len(xb))
    diffs = statistic(_summed_counts(xa, study_w, wa)) - statistic(_summed_counts(xb, study_w, wb))
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    diff = float(statistic(xa.sum((0, 1))[None])[0] - statistic(xb.sum((0, 1))[None])[0])
    tail = min((diffs <= 0).sum(), (diffs >= 0).sum())
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "p": float(min(1.0, 2 * (tail + 1) / (num_resamples + 1))),
            "studies": int(xa.shape[1]), "seeds_a": int(len(xa)), "seeds_b": int(len(xb))}
