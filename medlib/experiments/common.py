"""What the three experiment modules share: the shape of what `load_data` returns, and the on-disk cache
of frozen-encoder features.

Every experiment module (`medblip`, `clinicalblip`, `minigpt_med`) offers the same two entry points:

- `load_data(profile, ...) -> ExperimentData`
- `load_model(profile, ...) -> (model, processor_or_tokenizer, trainable_summary)`
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from medlib import fileio
from medlib.data.synthcxr import build
from medlib.paths import cache_root, fingerprint


@dataclass
class ExperimentData:
    """One experiment's data: the image set the samples index into (SynthCXR-IU, RSNA's DICOMs, MedBLIP's
    paper images; None where samples carry their own image paths), the training and test samples, and
    further test sets of the same model (MiniGPT-Med's VQA and report tests)."""
    images: object
    train: list[dict]
    test: list[dict]
    other_tests: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str | None:
        """The data set's fingerprint, recorded in run.json (None where the image set has none)."""
        return getattr(self.images, "fingerprint", None)


def fixture_images():
    """SynthCXR-IU at 128 px: the images the paper-format fixtures (`write_paper_fixture` of each experiment,
    what `medlib gpu-check` and the paper-path tests read) are made from."""
    return build(image_size=128, progress=False)


def upsample(img: np.ndarray, side: int) -> np.ndarray:
    """A fixture image at the side the real data set's files have."""
    # imported here: only where images are decoded or written
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR))


def cached_features(key_parts: tuple, indices, compute: Callable[[list[int]], dict[int, torch.Tensor]],
                    prefix: str = "") -> dict[int, torch.Tensor]:
    """Per-image features of a frozen encoder, computed once (`compute(sorted indices)`) and kept on disk,
    so every arm of a sweep reuses them. `key_parts` must name everything the features depend on (the
    encoder's weights fingerprint, the data set's fingerprint, the model's identity): a rebuilt zoo or
    another data set never meets stale features. A torn file from a killed run is recomputed."""
    idx = sorted(set(indices))
    path = cache_root() / "features" / f"{prefix}{fingerprint(*key_parts, idx)}.pt"
    if path.exists():
        try:
            return torch.load(path)
        except Exception:
            path.unlink()
    feats = compute(idx)
    fileio.write_with(path, lambda p: torch.save(feats, p))
    return feats
