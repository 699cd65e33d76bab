"""What the experiment modules share: the shape of what `load_data` returns, the on-disk cache of frozen-encoder
features and the image-shuffled control. Every experiment module (`medblip`, `clinicalblip`, `minigpt_med`,
`adaptation`) offers the same verbs with the same return types: `load_data(profile, ...) -> ExperimentData`,
`load_model(profile, ...) -> (model, tokenizer or processor, what trains)`, `fit(model, ...) -> (model, history)`,
`evaluate(model, ...) -> Evaluation` and `record(evaluation, history, trainable, data, lr, batch_size) -> dict` (what
`run.finish` writes); docs/architecture.md lists them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from medlib import fileio
from medlib.paths import cache_root, fingerprint


@dataclass
class ExperimentData:
    """One experiment's data: the image set the samples index into (SynthCXR-IU, RSNA's DICOMs, MedBLIP's
    paper images; None where samples carry their own image paths), the training and test samples, and
    further test sets of the same model (MiniGPT-Med's VQA and report tests), and the validation samples.
    Notebook 04 trains one model on three tasks: its validation and test samples are {task: samples}."""
    images: object
    train: list[dict]
    test: list[dict] | dict[str, list[dict]]
    other_tests: dict[str, list[dict]] = field(default_factory=dict)
    val: list[dict] | dict[str, list[dict]] = field(default_factory=list)  # every choice (best arm, hyper-parameters) is made here

    def reported(self, split: str) -> list[dict] | dict[str, list[dict]]:
        """The samples of the split a run reports ("test" or "val": `Run.split`), refused when there are none."""
        samples = self.test if split == "test" else self.val
        if not (any(samples.values()) if isinstance(samples, dict) else samples):
            raise ValueError(f"no {split} samples to report on" + ("; set evaluate_test = True to score test" if split == "val" else ""))
        return samples

    @property
    def fingerprint(self) -> str | None:
        """The data set's fingerprint, recorded in run.json (None where the image set has none)."""
        return getattr(self.images, "fingerprint", None)


def point_estimates(metrics: dict) -> dict:
    """`metrics` without the interval bounds (`*_lo`, `*_hi`): what run.json keeps of validation."""
    return {k: v for k, v in metrics.items() if not k.endswith(("_lo", "_hi"))}


@dataclass
class Evaluation:
    """What every experiment's `evaluate` returns. `split` is what the run reports: test in a committed arm,
    validation elsewhere (`medlib.experiments.reads_test`). `metrics`, `shuffled` and `prior` summarise the model,
    its image-shuffled control and the text-only prior on the same items of that split; `val` is the model's
    summary on validation, what selection reads. `items`, `per_sample` and `predictions` are the rows every arm
    writes, in one order: what the aggregation pairs arms on, and what anyone can re-score with another
    implementation. `answers` is the model's output on the reported split, as the notebook shows it, and `detail`
    what else its paper's notebook shows (each module's `evaluate` says which)."""
    split: str
    metrics: dict
    shuffled: dict
    prior: dict
    val: dict
    items: pd.DataFrame
    per_sample: pd.DataFrame
    predictions: pd.DataFrame
    answers: list | dict
    detail: dict = field(default_factory=dict)

    def save(self, run) -> None:
        """Write the three row files of the arm (`evaluation_items`, `per_sample`, `predictions`)."""
        run.save_rows(self.items, "evaluation_items")
        run.save_rows(self.per_sample, "per_sample")
        run.save_rows(self.predictions, "predictions")


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


# -- the testbed every experiment shares: the image-use control and the encoder's linear probe ----

def derangement(keys, seed: int = 0) -> dict:
    """A fixed permutation of `keys` with no key left in place (Sattolo's algorithm: one cycle through
    all of them): the image-shuffled control gives every test study another test study's image."""
    keys = list(dict.fromkeys(keys))
    if len(keys) < 2:
        raise ValueError(f"an image-shuffled control needs at least 2 studies, got {len(keys)}")
    order = list(range(len(keys)))
    rng = np.random.default_rng(seed)
    for i in range(len(order) - 1, 0, -1):
        j = int(rng.integers(i))  # j < i: Sattolo, never i itself
        order[i], order[j] = order[j], order[i]
    return {k: keys[order[i]] for i, k in enumerate(keys)}


def image_shuffled(samples: list[dict], seed: int = 0) -> list[dict]:
    """The samples with each study's image replaced by another test study's (`derangement` over the
    studies in `samples`): the same questions and references, images that do not belong to them. A sample
    names its image by `image_index` (an image set) or by `image_path` (ClinicalBLIP's paper profile)."""
    key = "image_path" if samples and "image_index" not in samples[0] else "image_index"
    image_of = {}
    for s in samples:
        image_of.setdefault(s["study"], s[key])
    other = derangement(image_of, seed)
    return [{**s, key: image_of[other[s["study"]]]} for s in samples]


