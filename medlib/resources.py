"""Before a paper-profile run loads 3-8 B parameters: is there a GPU, and is it big enough?

The estimate is deliberately simple and stated: frozen weights in bf16 (2 bytes each), trainable
weights in fp32 with AdamW's two moments and a gradient (16 bytes each), plus an activation
allowance. It answers "will this fit?" in a second instead of failing an hour later.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass

import torch

from medlib.models import clinicalblip, medblip, minigpt_med
from medlib.models.common import count_parameters

GIB = 1024**3


@dataclass(frozen=True)
class Estimate:
    what: str
    total_params: int
    trainable_params: int
    activation_gib: float

    @property
    def gib(self) -> float:
        frozen = (self.total_params - self.trainable_params) * 2
        trainable = self.trainable_params * 16
        return (frozen + trainable) / GIB + self.activation_gib


def paper_estimate(experiment: str) -> Estimate:
    """Counted on the meta device from the paper configurations (nothing is allocated)."""
    if experiment == "medblip":
        with torch.device("meta"):
            model = medblip.build(medblip.paper_config())
        c = medblip.set_trainable(model, 0.3125)
        return Estimate("BLIP-2 OPT-2.7B, 31.25 % of fc layers trainable, batch 16 x 64 tokens", c["total_params"],
                        c["trainable_params"], 8.0)
    if experiment == "clinicalblip":
        with torch.device("meta"):
            c = count_parameters(clinicalblip.build(clinicalblip.paper_config()))
        return Estimate("InstructBLIP Vicuna-7B with LoRA", c["total_params"], 40_000_000, 10.0)
    if experiment == "minigpt_med":
        c = minigpt_med.paper_parameter_counts()
        return Estimate("EVA ViT-g 448 + LLaMA-2-7B with LoRA r=64", c["total_params"], c["trainable_params"], 12.0)
    raise ValueError(f"no paper-profile estimate for {experiment!r}")


def check_paper_resources(experiment: str, device=None) -> Estimate:
    """Raise at once, with the estimate, when the paper profile cannot run here."""
    est = paper_estimate(experiment)
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type != "cuda":
        raise RuntimeError(f"the paper profile of {experiment} needs a CUDA GPU with about {est.gib:.0f} GiB "
                           f"({est.what}: {est.total_params / 1e9:.2f} B parameters, {est.trainable_params / 1e6:.0f} M trainable); "
                           "this machine has none. Use profile='tiny' on a CPU.")
    free, total = torch.cuda.mem_get_info(torch.device(device))
    if est.gib * GIB > free:
        raise RuntimeError(f"the paper profile of {experiment} needs about {est.gib:.0f} GiB of GPU memory "
                           f"({est.what}); {torch.cuda.get_device_name(device)} has {free / GIB:.0f} of {total / GIB:.0f} GiB free.")
    return est


def peak_memory_mb(device) -> float:
    """The arm's peak memory: the GPU's allocated peak on CUDA, else the kernel process's peak resident set."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
