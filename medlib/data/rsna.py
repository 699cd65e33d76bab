"""RSNA Pneumonia as MiniGPT-Med grounds on it (paper profile of notebook 03).

The label CSV's patients with at least one box become studies with one drawn finding, "pneumonia"
(MiniGPT-Med trains and scores grounding on positive images only; negatives are counted, not used).
Images are the DICOMs at `<image_dir>/<patientId>.dcm`, read when first needed, windowed by
`medlib.data.dicom.read_dicom` and resized to the model's side, so the whole set never has to fit in
memory. Patients are split by a hash of their id, 80 / 10 / 10 (one patient never sits on both sides).
The object offers what notebook 03 uses of SynthCXR-IU: `studies`, `split()`, `images[...]`,
`image_size`, `fingerprint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from medlib.data.dicom import read_dicom
from medlib.data.loaders import rsna_pneumonia
from medlib.data.sources import file_digest
from medlib.data.splits import hash_split
from medlib.paths import fingerprint

SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}
LABEL = "pneumonia"
SIDE = 1024  # RSNA's DICOMs and boxes are 1024 x 1024
# EVA / CLIP normalisation, as MiniGPT-v2's image processor applies it
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class RsnaStudy:
    index: int
    uid: str            # patientId
    split: str
    drawn: list[dict]   # one finding: label, boxes in pixels at the dataset's image_size
    view: str = "PA/AP"

    @property
    def labels(self) -> list[str]:
        return [LABEL]


class LazyImages:
    """`images[i]` -> (S, S) uint8, `images[[i, j]]` -> (N, S, S): read from DICOM on first use and
    kept (up to `keep` images; 448 px images are 200 kB each)."""
    def __init__(self, paths: list[Path], side: int, keep: int = 16_384):
        self.paths, self.side = paths, side
        self._read = lru_cache(maxsize=keep)(self._read_one)

    def _read_one(self, i: int) -> np.ndarray:
        img = read_dicom(self.paths[i])
        if img.shape != (SIDE, SIDE):  # the label CSV's boxes are in the 1024 px frame
            raise ValueError(f"{self.paths[i]}: image is {img.shape[1]} x {img.shape[0]} px; RSNA's boxes refer to "
                             f"{SIDE} x {SIDE} images")
        if SIDE != self.side:
            img = np.asarray(Image.fromarray(img).resize((self.side, self.side), Image.BILINEAR))
        return img

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._read(int(key))
        return np.stack([self._read(int(i)) for i in np.asarray(key).ravel()])


class RsnaGrounding:
    pixel_mean, pixel_std = PIXEL_MEAN, PIXEL_STD

    def __init__(self, studies: list[RsnaStudy], images: LazyImages, image_size: int, meta: dict):
        self.studies, self.images, self.image_size, self.meta = studies, images, image_size, meta

    def split(self, name: str) -> list[RsnaStudy]:
        if name not in SPLIT:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLIT)}")
        return [s for s in self.studies if s.split == name]

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def __repr__(self):
        m = self.meta
        return (f"RsnaGrounding({m['labels_csv']}: {len(self.studies)} positive patients at {self.image_size} px, "
                f"{m['negative_patients']} negative left out, {len(m['skipped'])} skipped)")


def load(labels_csv: str | Path, image_dir: str | Path, image_size: int = 448,
         skip_missing_images: bool = True) -> RsnaGrounding:
    """The positive patients of RSNA's label CSV with their DICOMs; missing DICOMs are skipped and
    counted (`meta["skipped"]`) unless `skip_missing_images=False`, which makes them an error."""
    if not str(labels_csv) or not str(image_dir):
        raise ValueError("the paper profile of MiniGPT-Med needs rsna_labels_csv (stage_2_train_labels.csv) "
                         "and rsna_image_dir (the folder of <patientId>.dcm)")
    labels_csv, image_dir = Path(labels_csv), Path(image_dir)
    if not labels_csv.is_file():
        raise FileNotFoundError(f"{labels_csv}: RSNA label CSV not found")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: RSNA image folder not found")
    rows = rsna_pneumonia(labels_csv, image_dir, SIDE, skip_missing_images=skip_missing_images)
    positive = [s for s in rows if s.boxes]
    if not positive:
        raise ValueError(f"{labels_csv}: no patient with a box (Target 1) whose DICOM is in {image_dir}")
    scale = image_size / SIDE
    studies = [RsnaStudy(k, s.id, hash_split(f"rsna:{s.id}", SPLIT),
                         [{"label": LABEL, "kind": "opacity", "boxes": [[v * scale for v in b] for b in s.boxes]}])
               for k, s in enumerate(positive)]
    # The DICOMs (3.5 GB) are not hashed: the label file and the list of patients used identify the data.
    meta = {"labels_csv": str(labels_csv), "image_dir": str(image_dir), "skipped": rows.skipped,
            "negative_patients": len(rows) - len(positive),
            "fingerprint": fingerprint("rsna", file_digest(labels_csv), [s.uid for s in studies], image_size)}
    return RsnaGrounding(studies, LazyImages([s.image_paths[0] for s in positive], image_size), image_size, meta)
