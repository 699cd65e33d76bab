"""The one place a device is chosen: `device="auto"` means CUDA when present, else CPU."""

from __future__ import annotations


def resolve_device(device: str = "auto"):
    # imported here: keeps this module importable without torch (medlib list)
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for, but torch sees no CUDA GPU on this machine")
    return torch.device(device)
