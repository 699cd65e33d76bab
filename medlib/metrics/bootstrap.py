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
