"""Profiles: one code path at three sizes.

- smoke: random tiny models, a few dozen studies, seconds. For tests.
- tiny:  the default. CPU, minutes: the pre-trained tiny zoo and SynthCXR-IU.
- paper: the real Hugging Face checkpoints and real data from user paths, on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    image_size: int          # rendered radiograph side in pixels
    data_limit: int | None   # first N studies of SynthCXR-IU (None = all)
    pretrained: bool         # tiny zoo weights (True) or random (False)


PROFILES = {
    "smoke": Profile("smoke", 128, 160, False),
    "tiny": Profile("tiny", 128, None, True),
    "paper": Profile("paper", 224, None, True),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
