"""Where a number came from: the code's commit, the package versions, the machine (what run.json and the
metrics manifest record)."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from medlib.paths import REPO_ROOT
from medlib.seeding import cpu_dispatch, cpu_model


def git_state(root: Path = REPO_ROOT) -> dict:
    """The commit and whether the code had uncommitted changes; None where there is no git. Files
    under results/ do not count: they are what runs write (a reproduction rewrites them as it
    goes), never what computes the numbers."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"], cwd=root,
                                capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("medlib", "torch", "transformers", "peft", "accelerate", "timm", "tokenizers", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict:
    # imported here: keeps this module importable without torch (medlib list)
    import torch

    info = {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "cpu_dispatch": cpu_dispatch()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)  # this process so far
    return info
