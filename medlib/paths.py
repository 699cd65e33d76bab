"""Where things live: the checkout, the cache of built data and models. A leaf: imports nothing of medlib
but `fileio`."""

from __future__ import annotations

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
