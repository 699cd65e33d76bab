"""Where things live and how they are keyed: the checkout, the cache of built data and models, and the
fingerprints that name what a cache entry or a run was made from. A leaf: imports nothing of medlib but
`fileio`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from medlib import fileio

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    """Where built data and models are kept: $MEDLIB_CACHE, else `.medlib_cache/` in the checkout. A
    MEDLIB_CACHE that is a file (or lies under one) is refused with its name."""
    if os.environ.get("MEDLIB_CACHE"):
        return fileio.check_directory(os.environ["MEDLIB_CACHE"], "MEDLIB_CACHE")
    return REPO_ROOT / ".medlib_cache"


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-able parts (parameters, file digests, versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def weights_fingerprint(module) -> str:
    """A short key of a module's weights: every parameter's name and shape, and the values of the
    first and last tensors (every tensor of a model under 1e8 values; cheap even for a 1B-parameter ViT). Caches of what a frozen encoder
    computes carry it, so a rebuilt or re-seeded encoder never meets features of another."""
    state = list(module.state_dict().items())
    h = hashlib.sha256(json.dumps([(k, list(v.shape)) for k, v in state]).encode())
    small = sum(v.numel() for _, v in state) <= 10**8  # a tiny model: every value, so any rebuild shows
    for _, tensor in (state if small else (state[0], state[-1])):
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
