"""What the three experiment modules share: the on-disk cache of frozen-encoder features."""

from __future__ import annotations

from collections.abc import Callable

import torch

from medlib import fileio
from medlib.paths import cache_root, fingerprint


def cached_features(key_parts: tuple, indices, compute: Callable[[list[int]], dict[int, torch.Tensor]],
                    prefix: str = "") -> dict[int, torch.Tensor]:
    """Per-image features of a frozen encoder, computed once (`compute(sorted indices)`) and kept on disk,
    so every arm of a sweep reuses them. `key_parts` must name everything the features depend on (the
    encoder's weights fingerprint, the data set's fingerprint, the model's identity): a rebuilt zoo or
    another data set never meets stale features. A torn file from a killed run is recomputed."""
    idx = sorted(set(indices))
    path = cache_root() / "features" / f"{prefix}{fingerprint(*key_parts, idx)}.pt"
    if path.exists():
        try:
            return torch.load(path)
        except Exception:
            path.unlink()
    feats = compute(idx)
    fileio.write_with(path, lambda p: torch.save(feats, p))
    return feats
