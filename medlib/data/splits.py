"""Splits by a hash of an id: deterministic, independent of order, and adding items never moves
old ones. Every data set in medlib splits this way (by study or by patient, never by row, so one
image cannot be in training and test)."""

from __future__ import annotations

import zlib


def hash_split(key: str, shares: dict[str, float]) -> str:
    """The split `key` falls in, given the splits' shares (in order; they must sum to 1)."""
    if abs(sum(shares.values()) - 1.0) > 1e-9:
        raise ValueError(f"split shares must sum to 1, got {shares}")
    u = (zlib.crc32(key.encode()) % 10_000) / 10_000
    acc = 0.0
    for name, share in shares.items():
        acc += share
        if u < acc:
            return name
    return name
