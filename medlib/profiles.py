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
    max_train_studies: int   # training studies used per arm
    max_test_studies: int    # held-out studies scored per arm
    pretrained: bool         # tiny zoo weights (True) or random (False)


PROFILES = {
    "smoke": Profile("smoke", 128, 160, 40, 16, False),
    "tiny": Profile("tiny", 128, None, 300, 150, True),
    "paper": Profile("paper", 224, None, 10**9, 10**9, True),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
