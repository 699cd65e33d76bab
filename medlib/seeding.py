"""One call that makes a CPU run repeat exactly."""

import os
import random

import numpy as np


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels.

    On CPU the same seed then gives bit-identical metrics; on GPU some kernels have no
    deterministic variant, so `warn_only=True` keeps them running with a warning.
    """
    # imported here: keeps this module importable without torch (medlib list)
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        # cuBLAS needs this workspace setting before it is first used to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
