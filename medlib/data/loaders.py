"""Loaders for the papers' real data sets in their published layouts (paper profile).

All give one sample schema (`Sample`): image path(s), and whichever of report / question / answer /
question type / boxes the data set has, with its ids. Errors name the file, the entry and the field.
Large real data sets have a few broken rows; `skip_missing_images=True` skips rows whose image is
absent, counts them in `.skipped`, and says so — never a silent wrong sample.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pydicom
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from medlib.data.iu_xray import clean_report, read_reports, truncate_tokens
from medlib.data.splits import hash_split
from medlib.paths import fingerprint

SPLITS = ("train", "val", "test")

# Byte-order marks of encodings other than UTF-8, to name them when a CSV arrives in one.
_BOMS = {b"\xff\xfe\x00\x00": "UTF-32 (LE)", b"\x00\x00\xfe\xff": "UTF-32 (BE)", b"\xff\xfe": "UTF-16 (LE)", b"\xfe\xff": "UTF-16 (BE)"}


def read_utf8(path: str | Path, save_as: str = "UTF-8") -> str:
    """A text file (or a gzipped one) read as UTF-8, with or without the byte-order mark a spreadsheet's "CSV UTF-8"
    adds. Another encoding is refused naming the file and, where its mark or its zero bytes tell, the encoding,
    rather than with a bare UnicodeDecodeError, a BOM read as part of the first column, or a UTF-16 file without a
    mark whose every other byte is zero read as text with "missing columns"."""
    raw = Path(path).read_bytes()
    if str(path).endswith(".gz"):
        raw = gzip.decompress(raw)
    for bom, name in _BOMS.items():
        if raw.startswith(bom):
            raise ValueError(f"{path}: the file is {name}; save it as {save_as} and try again")
    head = raw[:4096]
    if head.count(0) > len(head) // 4:  # text in UTF-8 has no zero bytes; ASCII in UTF-16 has one in every two
        name = "UTF-16 (LE)" if head[1::2].count(0) > head[0::2].count(0) else "UTF-16 (BE)"
        raise ValueError(f"{path}: the file looks like {name} without a byte-order mark (every other byte is zero); "
                         f"save it as {save_as} and try again")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 (byte {raw[err.start]:#04x} at offset {err.start}; latin-1 / Windows-1252?); "
                         f"save it as {save_as} and try again") from err


def read_csv_rows(path: Path) -> tuple[list[str], list[dict]]:
    """A CSV's (or a gzipped CSV's) header and rows (`read_utf8`)."""
    reader = csv.DictReader(io.StringIO(read_utf8(path, 'UTF-8 ("CSV UTF-8")'), newline=""))
    return list(reader.fieldnames or []), list(reader)


def read_json(path: str | Path):
    """A JSON file (`read_utf8`: another encoding refused naming the file), or ValueError naming it."""
    try:
        return json.loads(read_utf8(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def check_images(paths, source: str) -> None:
    """Open the header of every image a data set refers to, with a progress bar, before a model is loaded: a
    corrupt or truncated file is found now, named with the data set's file, not when its pixels are first read.
    PNG / JPEG: PIL opens and verifies the file; DICOM: pydicom reads the header and finds pixel data."""
    bad = []
    for p in tqdm(list(dict.fromkeys(Path(x) for x in paths)), desc=f"checking images of {Path(source).name}", unit="image",
                  mininterval=1.0):
        try:
            if p.suffix.lower() == ".dcm":
                ds = pydicom.dcmread(p, defer_size="1 KB")
                if "PixelData" not in ds:
                    raise ValueError("no pixel data")
            else:
                with Image.open(p) as im:
                    im.verify()
        except Exception as err:  # any decoder's error: the file is what is wrong
            bad.append(f"{p} ({type(err).__name__}: {str(err).strip()[:120]})")
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(f"{source}: {len(bad)} image(s) cannot be read: {'; '.join(bad[:5])}{more}")


@dataclass
class Sample:
    id: str
    image_paths: list[Path]
    report: str | None = None
    question: str | None = None
    answer: str | None = None
    question_type: str | None = None
    boxes: list[list[float]] = field(default_factory=list)  # pixels x1, y1, x2, y2
    image_size: tuple[int, int] | None = None             # (width, height) the boxes refer to


class SampleDataset(Dataset):
    def __init__(self, samples: list[Sample], source: str, skipped: list[str] | None = None):
        self.samples, self.source, self.skipped = samples, source, skipped or []

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i) -> Sample:
        return self.samples[i]

    def __repr__(self):
        return f"{type(self).__name__}({self.source}: {len(self)} samples, {len(self.skipped)} skipped)"


def _check_split(split: str, path) -> None:
    if split not in SPLITS:
        raise ValueError(f"{path}: unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def _need(entry: dict, key: str, where: str):
    if key not in entry or entry[key] in (None, ""):
        raise ValueError(f"{where} has no {key!r}")
    return entry[key]


def _image(root: Path, rel: str, where: str, skip: bool, skipped: list) -> Path | None:
    p = root / rel
    if p.exists():
        return p
    if skip:
        skipped.append(f"{where}: image {p} missing")
        return None
    raise FileNotFoundError(f"{where}: image file {p} not found")


def r2gen_annotation(annotation: str | Path, image_root: str | Path, split: str, dataset: str = "iu_xray",
                     skip_missing_images: bool = False) -> SampleDataset:
    """R2Gen's `annotation.json` ({"train","val","test"} lists of {id, report, image_path[list]}).
    Reports are cleaned as R2Gen does and cut to 60 (IU X-Ray) or 100 (MIMIC-CXR) tokens."""
    annotation, image_root = Path(annotation), Path(image_root)
    _check_split(split, annotation)
    data = read_json(annotation)
    if split not in data:
        raise ValueError(f"{annotation}: no {split!r} list (has {sorted(data)})")
    max_tokens = {"iu_xray": 60, "mimic_cxr": 100}.get(dataset)
    if max_tokens is None:
        raise ValueError(f"dataset must be iu_xray or mimic_cxr, got {dataset!r}")
    samples, skipped = [], []
    for k, entry in enumerate(data[split]):
        where = f"{annotation}: {split} entry {k}"
        report = _need(entry, "report", where)
        if not str(report).strip():
            raise ValueError(f"{where} has an empty 'report'")
        paths = _need(entry, "image_path", where)
        if not isinstance(paths, list):
            raise ValueError(f"{where}: 'image_path' must be a list of paths, got {type(paths).__name__}")
        imgs = [_image(image_root, p, where, skip_missing_images, skipped) for p in paths]
        if any(i is None for i in imgs):
            continue
        samples.append(Sample(str(_need(entry, "id", where)), imgs, report=truncate_tokens(clean_report(report), max_tokens)))
    return SampleDataset(samples, str(annotation), skipped)


DIFF_VQA_COLUMNS = ("study_id", "subject_id", "question_type", "question", "answer", "dicom_id")


def medical_diff_vqa(csv_path: str | Path, image_root: str | Path, skip_missing_images: bool = True) -> SampleDataset:
    """Medical-Diff-VQA as MedBLIP used it: CSV `study_id, subject_id, question_type, question, answer,
    dicom_id` (+ optional `is_generate`), images at MIMIC-CXR-JPG's
    `files/p<first 2 of subject>/p<subject>/s<study>/<dicom_id>.jpg`."""
    csv_path, image_root = Path(csv_path), Path(image_root)
    header, rows = read_csv_rows(csv_path)
    missing = [c for c in DIFF_VQA_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {missing}; expected {', '.join(DIFF_VQA_COLUMNS)}")
    samples, skipped = [], []
    for k, row in enumerate(rows, start=2):
        where = f"{csv_path}: line {k}"
        for c in ("question", "answer", "dicom_id"):
            _need(row, c, where)
        subj = str(row["subject_id"]).strip()
        rel = f"files/p{subj[:2]}/p{subj}/s{row['study_id']}/{row['dicom_id']}.jpg"
        img = _image(image_root, rel, where, skip_missing_images, skipped)
        if img is None:
            continue
        samples.append(Sample(f"{row['study_id']}:{k}", [img], question=row["question"], answer=row["answer"],
                              question_type=row["question_type"]))
    return SampleDataset(samples, str(csv_path), skipped)


RSNA_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")


def diff_vqa_by_study(csv_path: str | Path, image_root: str | Path, question_types, processor, fractions: dict[str, float],
                      salt: str) -> tuple[PaperImages, dict[str, list[dict]]]:
    """Medical-Diff-VQA's questions of `question_types` as dicts (study, question_type, question and answer in lower
    case, image_index), split by study into `fractions` (`hash_split` of "salt:study"); the images are checked
    before any model loads. Returns the images, as `processor` prepares them, and the splits."""
    rows = [r for r in medical_diff_vqa(csv_path, image_root) if r.question_type in question_types]
    if not rows:
        raise ValueError(f"{csv_path}: no question of the types {', '.join(question_types)}")
    paths = sorted({str(r.image_paths[0]) for r in rows})
    check_images(paths, csv_path)
    index = {p: i for i, p in enumerate(paths)}
    parts = {name: [] for name in fractions}
    for r in rows:
        study = r.id.split(":")[0]
        parts[hash_split(f"{salt}:{study}", fractions)].append(
            {"study": study, "question_type": r.question_type, "question": r.question.strip().lower(),
             "answer": r.answer.strip().lower(), "image_index": index[str(r.image_paths[0])]})
    return PaperImages(paths, processor), parts


def rsna_pneumonia(labels_csv: str | Path, image_dir: str | Path, image_side: int = 1024,
                   skip_missing_images: bool = False) -> SampleDataset:
    """RSNA Pneumonia: the label CSV (one row per box; negatives have empty boxes) grouped per patient,
    images `<image_dir>/<patientId>.dcm` (read with `medlib.data.dicom.read_dicom`)."""
    labels_csv, image_dir = Path(labels_csv), Path(image_dir)
    boxes: dict[str, list] = {}
    header, rows = read_csv_rows(labels_csv)
    missing = [c for c in RSNA_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{labels_csv}: missing column(s) {missing}; expected {', '.join(RSNA_COLUMNS)}")
    for k, row in enumerate(rows, start=2):
        pid = _need(row, "patientId", f"{labels_csv}: line {k}")
        boxes.setdefault(pid, [])
        if row["Target"] == "1":
            try:
                x, y, w, h = (float(row[c]) for c in ("x", "y", "width", "height"))
            except ValueError as err:
                raise ValueError(f"{labels_csv}: line {k}: Target is 1 but the box is not numeric ({err})") from err
            if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > image_side or y + h > image_side:
                raise ValueError(f"{labels_csv}: line {k}: box ({x}, {y}, {w}, {h}) lies outside the {image_side} px image")
            boxes[pid].append([x, y, x + w, y + h])
    samples, skipped = [], []
    for pid, bxs in boxes.items():
        img = _image(image_dir, f"{pid}.dcm", f"{labels_csv}: patient {pid}", skip_missing_images, skipped)
        if img is not None:
            samples.append(Sample(pid, [img], boxes=bxs, image_size=(image_side, image_side)))
    return SampleDataset(samples, str(labels_csv), skipped)


def vqa_json(json_path: str | Path, image_root: str | Path, dataset: str, skip_missing_images: bool = False) -> SampleDataset:
    """VQA-RAD (`image_name, question, answer, answer_type`) or SLAKE (`img_name, question, answer,
    answer_type, q_lang`; English rows only) in their JSON releases."""
    json_path, image_root = Path(json_path), Path(image_root)
    if dataset not in ("vqa_rad", "slake"):
        raise ValueError(f"dataset must be vqa_rad or slake, got {dataset!r}")
    rows = read_json(json_path)
    image_key = "image_name" if dataset == "vqa_rad" else "img_name"
    samples, skipped = [], []
    for k, row in enumerate(rows):
        where = f"{json_path}: entry {k}"
        if dataset == "slake" and row.get("q_lang", "en") != "en":
            continue
        img = _image(image_root, _need(row, image_key, where), where, skip_missing_images, skipped)
        if img is None:
            continue
        samples.append(Sample(str(row.get("qid", k)), [img], question=_need(row, "question", where),
                              answer=str(_need(row, "answer", where)), question_type=row.get("answer_type")))
    return SampleDataset(samples, str(json_path), skipped)


def openi_xml(report_dir: str | Path, image_dir: str | Path, skip_missing_images: bool = True) -> SampleDataset:
    """IU X-Ray as Open-i distributes it: one XML report per study (`ecgen-radiology/*.xml`, or the
    `.tgz`) and PNG images named by the report's `parentImage` ids (`<id>.png`)."""
    image_dir = Path(image_dir)
    samples, skipped = [], []
    for rep in read_reports(report_dir):
        text = " ".join(t for t in (rep.findings, rep.impression) if t)
        if not text:
            skipped.append(f"{report_dir}: {rep.uid} has no FINDINGS or IMPRESSION")
            continue
        paths = [image_dir / f"{i}.png" for i in rep.image_ids]
        if not paths:
            skipped.append(f"{report_dir}: {rep.uid} names no images")
            continue
        present = [p for p in paths if p.exists()]
        if len(present) < len(paths):
            if not skip_missing_images:
                missing = next(p for p in paths if not p.exists())
                raise FileNotFoundError(f"{report_dir}: {rep.uid}: image file {missing} not found")
            skipped.append(f"{rep.uid}: {len(paths) - len(present)} image(s) missing")
            if not present:
                continue
        samples.append(Sample(rep.uid, present, report=clean_report(text)))
    return SampleDataset(samples, str(report_dir), skipped)


def mimic_cxr_jpg(root: str | Path, reports_root: str | Path | None = None, split_csv: str | Path | None = None,
                  split: str | None = None) -> SampleDataset:
    """MIMIC-CXR-JPG's folder layout `files/pXX/p<subject>/s<study>/<dicom_id>.jpg`, one sample per
    study, with the free-text report `files/pXX/p<subject>/s<study>.txt` from MIMIC-CXR when
    `reports_root` is given, and the official split from `mimic-cxr-2.0.0-split.csv(.gz)`."""
    root = Path(root)
    files = root / "files"
    if not files.is_dir():
        raise FileNotFoundError(f"{root}: no 'files/' folder; expected MIMIC-CXR-JPG's files/pXX/pSUBJECT/sSTUDY/*.jpg")
    keep = None
    if split is not None:
        _check_split(split, split_csv)
        if split_csv is None:
            raise ValueError("a split needs split_csv (mimic-cxr-2.0.0-split.csv.gz)")
        header, rows = read_csv_rows(Path(split_csv))
        if "study_id" not in header or "split" not in header:
            raise ValueError(f"{split_csv}: expected columns study_id and split")
        wanted = "validate" if split == "val" else split
        keep = {row["study_id"] for row in rows if row["split"] == wanted}
    samples, skipped = [], []
    for study in sorted(files.glob("p*/p*/s*")):
        if not study.is_dir() or (keep is not None and study.name[1:] not in keep):
            continue
        images = sorted(study.glob("*.jpg"))
        if not images:
            skipped.append(f"{study}: no images")
            continue
        report = None
        if reports_root is not None:
            txt = Path(reports_root) / study.relative_to(root).parent / f"{study.name}.txt"
            if not txt.exists():
                skipped.append(f"{study}: report {txt} missing")
                continue
            report = truncate_tokens(clean_report(txt.read_text(encoding="utf-8", errors="replace")), 100)
        samples.append(Sample(study.name, images, report=report))
    return SampleDataset(samples, str(root), skipped)


class PaperImages:
    """A paper profile's images: the files a data set names (MedBLIP: MIMIC-CXR-JPG), read when needed and made
    into the checkpoint's pixel values by its own image processor (BLIP-2: 224 px, CLIP normalisation).
    Processed images are kept (up to `keep`, 0.6 MB each): with the conv stem on, the ViT runs every
    step, and decoding the same JPEGs every epoch would cost more than the step."""
    def __init__(self, paths: list[str], processor, keep: int = 4096):
        self.paths, self.processor = paths, processor
        self.fingerprint = fingerprint(*paths)
        self._one = lru_cache(maxsize=keep)(self._process)

    def _process(self, i: int) -> torch.Tensor:
        try:
            img = Image.open(self.paths[i]).convert("RGB")
        except OSError as err:
            raise ValueError(f"{self.paths[i]}: not a readable image ({err})") from err
        return self.processor(images=[img], return_tensors="pt")["pixel_values"][0]

    def pixel_values(self, indices, blank: bool = False) -> torch.Tensor:
        if blank:  # black images of the sizes the real ones have
            sizes = [Image.open(self.paths[i]).size for i in indices]
            return self.processor(images=[Image.new("RGB", size) for size in sizes], return_tensors="pt")["pixel_values"]
        return torch.stack([self._one(int(i)) for i in indices])
