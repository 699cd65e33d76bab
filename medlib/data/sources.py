"""Where the real data that ships inside installed packages lies, found without importing them."""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path


@cache
def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed; install medlib's dependencies (make test does)")
    return Path(next(iter(spec.submodule_search_locations)))


def xrv_file(filename: str) -> Path:
    """A data file shipped in torchxrayvision/data (read as a file; torchxrayvision is not imported)."""
    path = package_dir("torchxrayvision") / "data" / filename
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found in the installed torchxrayvision; reinstall it")
    return path


IU_REPORTS = "NLMCXR_reports.tgz"
RSNA_LABELS = "kaggle_stage_2_train_labels.csv.zip"
LUNG_MASKS = "semantic_masks_v7labs_lungs.zip"


@cache
def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
