"""What makes a CPU run repeat exactly: seeds, and the CPU code paths the numbers are computed on.

The same seed is not enough across machines. torch picks its vectorised kernels by the CPU's
instruction set (AVX-512 on one machine, AVX2 on another), and so do MKL (matrix products) and
oneDNN (convolutions); each choice rounds differently, and a few hundred optimizer steps turn
rounding into different metrics. `pin_cpu_dispatch` fixes all three to AVX2, which every x86-64 CPU
since 2013 has, and `pin_threads` fixes the thread count (a reduction split over two threads adds
in another order). Both are recorded in run.json (`cpu_dispatch`).
"""

import functools
import os
import platform
import random
import sys
import warnings
from pathlib import Path

import numpy as np

# Environment read once, when torch (and MKL / oneDNN inside it) is first loaded.
CPU_DISPATCH = {
    "ATEN_CPU_CAPABILITY": "avx2",        # torch's own vectorised kernels
    "MKL_CBWR": "AVX2,STRICT",            # MKL's conditional numerical reproducibility: AVX2 code on any newer CPU
    "ONEDNN_MAX_CPU_ISA": "AVX2",         # oneDNN (convolutions): no AVX-512 / AMX kernels
}
# Set MEDLIB_CPU_DISPATCH=native to let each library choose for the machine (faster on AVX-512, not repeatable elsewhere).
NATIVE = "native"
THREADS = int(os.environ.get("MEDLIB_THREADS", "1"))  # torch threads in a tiny / smoke run; sweeps run arms side by side instead


def pin_cpu_dispatch() -> dict:
    """Set the dispatch environment before torch runs its first kernel, when it fixes its kernel set (medlib's
    package import calls this).
    A value the user set explicitly is kept, and recorded. Returns what is in force."""
    if os.environ.get("MEDLIB_CPU_DISPATCH", "").lower() != NATIVE:
        for name, value in CPU_DISPATCH.items():
            os.environ.setdefault(name, value)
    # Waiting OpenMP threads sleep instead of spinning: a two-thread zoo build beside another job on two cores
    # otherwise burns the other job's core spinning. It changes no number, only who waits how.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return cpu_dispatch()


def pin_threads(threads: int = THREADS) -> None:
    """One thread count for torch's intra-op pool (and the OpenMP / MKL pools it drives)."""
    # imported here: keeps this module importable without torch (medlib list)
    import torch

    torch.set_num_threads(threads)


def keeps_process_state(build):
    """Decorate a zoo builder: whatever thread count and random state it sets for itself, the caller gets its own
    back. An arm whose kernel builds the zoo first then trains exactly as an arm that found the zoo built."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        # imported here: keeps this module importable without torch (medlib list)
        import torch

        threads, torch_rng, np_rng, py_rng = torch.get_num_threads(), torch.get_rng_state(), np.random.get_state(), random.getstate()
        try:
            return build(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
            torch.set_rng_state(torch_rng)
            np.random.set_state(np_rng)
            random.setstate(py_rng)

    return wrapper


def cpu_dispatch() -> dict:
    """What the numbers of this process are computed with: the environment above, the kernel set torch
    actually uses (torch falls back below AVX2 on an older CPU), and the thread count."""
    out = {name: os.environ.get(name) for name in CPU_DISPATCH}
    out["MEDLIB_CPU_DISPATCH"] = os.environ.get("MEDLIB_CPU_DISPATCH") or "pinned"
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["torch_threads"] = torch.get_num_threads()
        pinned = out["MEDLIB_CPU_DISPATCH"] != NATIVE
        if pinned and out["torch_cpu_capability"] != out["ATEN_CPU_CAPABILITY"].upper() and out["ATEN_CPU_CAPABILITY"] == "avx2":
            warnings.warn(f"torch runs {out['torch_cpu_capability']} kernels, not AVX2: it ran a kernel before medlib was imported, or "
                          "this CPU lacks AVX2; these numbers will not repeat bit for bit on other machines", stacklevel=2)
    return out


def cpu_model() -> str | None:
    """The CPU's model name with its family, model and stepping (Linux: /proc/cpuinfo), beside the pinned dispatch:
    two machines whose zoo builds or runs differ bit for bit are told apart by it first. A virtual machine may show
    only "AMD EPYC"; the family tells one generation from another (25: Zen 3 and 4, 26: Zen 5)."""
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        if "model name" in fields:
            ids = ", ".join(f"{k.replace('cpu ', '')} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields)
            return f"{fields['model name']} ({ids})" if ids else fields["model name"]
    except OSError:
        pass
    return platform.processor() or None


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
