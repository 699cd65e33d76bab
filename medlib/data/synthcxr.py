"""SynthCXR-IU: every real IU X-Ray study with a radiograph rendered from its MeSH tags.

One study gives a report target, VQA pairs of the Medical-Diff-VQA question types and
grounding samples in MiniGPT-Med's text format. Splits are by study (so no image or report
crosses them), with a separate pre-training split for the tiny model zoo. The rendered set
is cached under a fingerprint of (source files, generator version, parameters).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from medlib import fileio
from medlib.boxes import format_answer, format_box, to_grid
from medlib.data import render
from medlib.data.iu_xray import Report, clean_report, parse_tag, read_reports
from medlib.data.sources import IU_REPORTS, LUNG_MASKS, RSNA_LABELS, file_digest, xrv_file
from medlib.data.splits import hash_split
from medlib.paths import cache_root, fingerprint

GENERATOR_VERSION = f"1.{render.RENDERER_VERSION}"
SPLITS = ("pretrain", "train", "val", "test")
# Shares of studies per split; pre-training gets its own disjoint share.
SPLIT_SHARES = {"pretrain": 0.30, "train": 0.45, "val": 0.10, "test": 0.15}


def rsna_boxes() -> np.ndarray:
    """The real RSNA Pneumonia boxes as normalised (x1, y1, x2, y2) on their 1024 px images."""
    # imported here: heavy: tables only
    import pandas as pd

    path = xrv_file(RSNA_LABELS)
    df = pd.read_csv(path)
    missing = {"patientId", "x", "y", "width", "height", "Target"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    df = df.dropna(subset=["x", "y", "width", "height"])
    return (np.stack([df.x, df.y, df.x + df.width, df.y + df.height], 1) / 1024.0).astype(np.float32)


def lung_shapes() -> np.ndarray:
    """Real lung outlines: V7 Labs' lung masks shipped with torchxrayvision, one template per
    lung, each cropped to its own box and resized to `render.LUNG_TEMPLATE` (rows, cols).
    Returns (N, 2, rows, cols) float in [0, 1]; [:, 0] is the patient's right lung (image left)."""
    return lung_outlines()[0]


@cache
def lung_outlines() -> tuple[np.ndarray, int]:
    """(`lung_shapes()`, how many masks were skipped). A documented skip: masks that are not two
    side-by-side lungs of comparable size (one lung, fragments, a lateral view)."""

    path = xrv_file(LUNG_MASKS)
    rows, cols = render.LUNG_TEMPLATE
    out, skipped = [], 0
    with zipfile.ZipFile(path) as z:
        for name in sorted(n for n in z.namelist() if not n.endswith("/")):
            try:
                im = Image.open(io.BytesIO(z.read(name))).convert("L")
            except OSError as e:
                raise ValueError(f"{path}: entry {name!r} is not a readable image ({e})") from e
            im.thumbnail((256, 256))
            mask = np.asarray(im) > 127
            lab, n = ndimage.label(mask)
            sizes = ndimage.sum(mask, lab, range(1, n + 1)) if n else np.zeros(0)
            if n < 2:
                skipped += 1
                continue
            a, b = (np.argsort(sizes)[-2:] + 1).tolist()
            boxes = ndimage.find_objects(lab)
            (right, rbox), (left, lbox) = sorted([(a, boxes[a - 1]), (b, boxes[b - 1])], key=lambda t: t[1][1].start)
            if min(sizes[a - 1], sizes[b - 1]) < 0.3 * max(sizes[a - 1], sizes[b - 1]) or rbox[1].stop > lbox[1].start + 2:
                skipped += 1
                continue
            pair = [np.asarray(Image.fromarray(((lab[box] == k) * 255).astype(np.uint8)).resize((cols, rows), Image.BILINEAR),
                               np.float32) / 255 for k, box in ((right, rbox), (left, lbox))]
            out.append(np.stack(pair))
    return np.stack(out), skipped


def split_of(uid: str, seed: int = 0) -> str:
    """Deterministic split by study id (a hash, so adding studies never moves old ones)."""
    return hash_split(f"{seed}:{uid}", SPLIT_SHARES)


@dataclass
class Study:
    index: int
    uid: str
    split: str
    view: str
    indication: str
    comparison: str
    findings: str
    impression: str
    has_findings: bool
    tags: list[str]
    drawn: list[dict]       # label, kind, side, zone, level, boxes (pixels), tag
    undrawn: list[str]      # tags the renderer does not draw (kept in the report text)

    @property
    def report(self) -> str:
        return " ".join(t for t in (self.findings, self.impression) if t).strip()

    @property
    def report_clean(self) -> str:
        return clean_report(self.report)

    @property
    def labels(self) -> list[str]:
        return sorted({d["label"] for d in self.drawn})


class SynthCXR:
    """The built dataset: `studies` (list of Study) and `images` (N, S, S) uint8, memory-mapped."""

    def __init__(self, root: Path):
        self.root = Path(root)
        meta = json.loads((self.root / "studies.json").read_text())
        self.meta = meta["meta"]
        self.image_size = self.meta["image_size"]
        self.studies = [Study(**s) for s in meta["studies"]]

    @cached_property
    def images(self) -> np.ndarray:
        return np.load(self.root / "images.npy", mmap_mode="r")

    def split(self, name: str) -> list[Study]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return [s for s in self.studies if s.split == name]

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]


def build(image_size: int = 128, seed: int = 0, limit: int | None = None, force: bool = False,
          progress: bool = True) -> SynthCXR:
    """Build (or load from cache) SynthCXR-IU. `limit` keeps the first N studies (smoke tests)."""
    src = xrv_file(IU_REPORTS)
    fp = fingerprint(file_digest(src), file_digest(xrv_file(RSNA_LABELS)), file_digest(xrv_file(LUNG_MASKS)), GENERATOR_VERSION,
                     image_size, seed, limit)
    root = cache_root() / "synthcxr" / fp
    if (root / "studies.json").exists() and not force:
        return SynthCXR(root)
    started = time.time()
    reports = read_reports(src)
    if limit:
        reports = reports[:limit]
    boxes, (lungs, lungs_skipped) = rsna_boxes(), lung_outlines()
    images = np.zeros((len(reports), image_size, image_size), np.uint8)
    studies = []
    for i, rep in enumerate(tqdm(reports, desc=f"rendering SynthCXR-IU at {image_size} px", disable=not progress)):
        studies.append(_render(rep, i, image_size, seed, boxes, lungs, images))
    root.mkdir(parents=True, exist_ok=True)
    fileio.write_with(root / "images.npy", lambda p: np.save(open(p, "wb"), images))
    meta = {"fingerprint": fp, "generator_version": GENERATOR_VERSION, "image_size": image_size, "seed": seed,
            "source": {"reports": str(src.name), "reports_sha256_16": file_digest(src),
                       "rsna_labels_sha256_16": file_digest(xrv_file(RSNA_LABELS)),
                       "lung_masks_sha256_16": file_digest(xrv_file(LUNG_MASKS)), "lung_shapes": len(lungs),
                       "lung_masks_skipped": lungs_skipped},
            "num_studies": len(studies), "build_seconds": round(time.time() - started, 2)}
    # studies.json last: its presence marks a complete build.
    fileio.write_json(root / "studies.json", {"meta": meta, "studies": [s.__dict__ for s in studies]})
    return SynthCXR(root)


def study_key(uid: str, index: int) -> int:
    """The number a study's own render is seeded with (with the data set's seed): its uid's digits."""
    return int("".join(ch for ch in uid if ch.isdigit()) or index)


def anatomy(studies: list[Study], image_size: int, seed: int = 0) -> list[list[dict]]:
    """The normal anatomy drawn in each study's own render (`anatomy.ANATOMY`, boxes in pixels), as drawn findings are."""
    rb, lungs = rsna_boxes(), lung_shapes()
    return [[a.to_dict() for a in render.render_with_anatomy([parse_tag(t) for t in s.tags], image_size, seed,
                                                             study_key(s.uid, s.index), rb, lungs, view=s.view)[3]]
            for s in studies]


def _render(rep: Report, index: int, size: int, seed: int, rsna: np.ndarray, lungs: np.ndarray, images: np.ndarray) -> Study:
    key = study_key(rep.uid, index)
    view = "AP" if (zlib.crc32(f"view:{rep.uid}".encode()) % 100) < 20 else "PA"
    img, drawn, undrawn = render.render_study(rep.tags, size, seed, key, rsna, lungs, view=view)
    images[index] = img
    return Study(index, rep.uid, split_of(rep.uid), view, rep.indication, rep.comparison, rep.findings,
                 rep.impression, rep.has_findings, [t.raw for t in rep.tags], [d.to_dict() for d in drawn], undrawn)


# -- what one study gives: VQA pairs and grounding samples -------------------------------------

LEVEL_WORDS = {1: "mild", 2: "moderate", 3: "severe"}
SIZE_WORDS = {1: "small", 2: "moderate", 3: "large"}


def location_phrase(d: dict) -> str:
    if d["side"] == "central":
        return "mediastinum" if d["kind"] != "cardiomegaly" else "heart"
    zone = "" if d["zone"] == "whole" else f"{d['zone']} "
    return f"{d['side']} {zone}lung"


def vqa_pairs(study: Study, all_labels: list[str], rng: np.random.Generator) -> list[dict]:
    """Medical-Diff-VQA style questions built from what was drawn: abnormality, presence,
    location, level, view, type. Presence questions are balanced yes / no."""
    qa = []
    labels = study.labels
    qa.append({"question_type": "abnormality", "question": "what abnormalities are seen in this image?",
               "answer": ", ".join(labels) if labels else "no abnormality"})
    qa.append({"question_type": "view", "question": "which view is this image taken?", "answer": study.view})
    absent = [lab for lab in all_labels if lab not in labels]
    for lab in labels:
        qa.append({"question_type": "presence", "question": f"is there {lab}?", "answer": "yes"})
        if absent:
            neg = absent[int(rng.integers(len(absent)))]
            qa.append({"question_type": "presence", "question": f"is there {neg}?", "answer": "no"})
    if not labels and absent:
        neg = absent[int(rng.integers(len(absent)))]
        qa.append({"question_type": "presence", "question": f"is there {neg}?", "answer": "no"})
    for d in study.drawn:
        qa.append({"question_type": "location", "question": f"where is the {d['label']} located?",
                   "answer": location_phrase(d)})
        words = SIZE_WORDS if d["kind"] in ("effusion", "pneumothorax", "nodule", "mass") else LEVEL_WORDS
        qa.append({"question_type": "level", "question": f"what level is the {d['label']}?", "answer": words[d["level"]]})
        kind_type = {"opacity": "airspace", "edema": "interstitial", "nodule": "calcified" if "calcified" in d["label"] or "granulom" in d["label"] else "solid",
                     "mass": "solid", "line": "tube", "wires": "metallic", "pacemaker": "metallic"}.get(d["kind"])
        if kind_type:
            qa.append({"question_type": "type", "question": f"what type is the {d['label']}?", "answer": kind_type})
    return [{**q, "study": study.uid} for q in qa]


TESTBED_QUESTION_TYPES = ("abnormality", "presence", "location", "level", "view")


def study_questions(study: Study) -> list[dict]:
    """The questions of one study whose answer only the image gives: what is abnormal, which view, and
    for each drawn finding where it is (position-variable findings only: the heart's place is no
    question) and how severe (kinds drawn by level only). No "type" question: its answer follows from
    the finding named in the question."""
    labels = study.labels
    qa = [{"question_type": "abnormality", "question": "what abnormalities are seen in this image?",
           "answer": ", ".join(labels) if labels else "no abnormality"},
          {"question_type": "view", "question": "which view is this image taken?", "answer": study.view}]
    for d in study.drawn:
        if d["kind"] not in render.POSITION_FIXED_KINDS:
            qa.append({"question_type": "location", "question": f"where is the {d['label']} located?",
                       "answer": location_phrase(d)})
        if d["kind"] in render.LEVEL_DRAWN_KINDS:
            words = SIZE_WORDS if d["kind"] in ("effusion", "pneumothorax", "nodule", "mass") else LEVEL_WORDS
            qa.append({"question_type": "level", "question": f"what level is the {d['label']}?", "answer": words[d["level"]]})
    return [{**q, "study": study.uid} for q in qa]


def presence_questions(studies: list[Study], rng: np.random.Generator) -> list[dict]:
    """"is there X?" balanced per finding: every study showing X is asked ("yes"), and as many studies
    without X, drawn at random from the same split ("no"), so the question alone answers half of them.
    Where fewer studies lack X than show it, all of them are asked."""
    out = []
    for lab in sorted({lab for s in studies for lab in s.labels}):
        pos = [s for s in studies if lab in s.labels]
        neg = [s for s in studies if lab not in s.labels]
        picked = [neg[i] for i in sorted(rng.choice(len(neg), size=min(len(pos), len(neg)), replace=False))]
        out += [{"question_type": "presence", "question": f"is there {lab}?", "answer": "yes", "study": s.uid} for s in pos]
        out += [{"question_type": "presence", "question": f"is there {lab}?", "answer": "no", "study": s.uid} for s in picked]
    return out


def testbed_vqa(studies: list[Study], seed: int = 0) -> list[dict]:
    """The VQA set of one split: `study_questions` of every study and the balanced `presence_questions`,
    from one generator seeded once (the same questions in every arm, whatever the arm's seed), in study
    order."""
    rng = np.random.default_rng(seed)
    order = {s.uid: i for i, s in enumerate(studies)}
    qa = [q for s in studies for q in study_questions(s)] + presence_questions(studies, rng)
    return sorted(qa, key=lambda q: order[q["study"]])  # stable: a study's own questions keep their order


def question_statistics(ds: SynthCXR, splits=("train", "val", "test"), seed: int = 0) -> list[dict]:
    """Per split and question type: questions, distinct answers, the most common answer and its share;
    for presence also the yes share. What the data card's question table shows (a test compares them)."""
    rows = []
    for split in splits:
        qa = testbed_vqa(ds.split(split), seed)
        for qt in TESTBED_QUESTION_TYPES:
            answers = [q["answer"] for q in qa if q["question_type"] == qt]
            if not answers:
                continue
            top, n = Counter(answers).most_common(1)[0]
            rows.append({"split": split, "question_type": qt, "questions": len(answers), "distinct_answers": len(set(answers)),
                         "most_common_answer": top, "most_common_share": round(n / len(answers), 3)})
    return rows


def grounding_statistics(ds: SynthCXR, splits=("train", "val", "test")) -> list[dict]:
    """Per split and kind of finding (`position_of`): drawn findings (one `[detection]` sample each), the
    studies they are in, distinct labels, boxes per finding and the most common label with its share.
    What the data card's grounding table shows (a test compares them)."""
    rows = []
    for split in splits:
        for pos in ("variable", "fixed"):
            found = [(s.uid, d) for s in ds.split(split) for d in s.drawn if position_of(d["kind"]) == pos]
            if not found:
                continue
            top, n = Counter(d["label"] for _, d in found).most_common(1)[0]
            rows.append({"split": split, "position": pos, "findings": len(found), "studies": len({u for u, _ in found}),
                         "labels": len({d["label"] for _, d in found}),
                         "boxes_per_finding": round(float(np.mean([len(d["boxes"]) for _, d in found])), 3),
                         "most_common_label": top, "most_common_share": round(n / len(found), 3)})
    return rows


def augment_question(qa: dict) -> list[dict]:
    """MedBLIP's "image sample generation": rewrite a QA pair on the same image.

    A presence question is negated and its answer flipped ("is there X?" -> "is there no X?");
    an abnormality question becomes one presence question per finding. (Their released CSVs
    flipped answers without negating some questions; these are the intended rules.)
    """
    out = []
    if qa["question_type"] == "presence" and qa["question"].startswith("is there ") and " no " not in qa["question"]:
        flipped = {"yes": "no", "no": "yes"}[qa["answer"]]
        out.append({**qa, "question": "is there no " + qa["question"][len("is there "):], "answer": flipped, "augmented": True})
    elif qa["question_type"] == "abnormality" and qa["answer"] != "no abnormality":
        for lab in qa["answer"].split(", "):
            out.append({**qa, "question_type": "presence", "question": f"is it {lab}?", "answer": "yes", "augmented": True})
    return out


def position_of(kind: str) -> str:
    """"fixed" where anatomy sets a finding's box (the heart, both lungs, the midline devices: the label alone
    says where it is), else "variable" (opacities, nodules, effusions, atelectasis, ...): grounding is only
    shown to read the image on the variable ones."""
    return "fixed" if kind in render.POSITION_FIXED_KINDS else "variable"


def grounding_samples(study: Study, image_size: int) -> list[dict]:
    """MiniGPT-Med grounding samples: `[detection]`, `[refer]` and `[identify]` per drawn finding, each with
    the finding's drawn kind and `position` ("fixed" / "variable", see `position_of`)."""
    return grounding_samples_of(study.drawn, study.uid, image_size)


def grounding_samples_of(drawn: list[dict], uid: str, image_size: int) -> list[dict]:
    """`grounding_samples` of any rendering's drawn findings (e.g. the zoo's extra renders of a study)."""
    out = []
    for d in drawn:
        grid = [to_grid(b, image_size) for b in d["boxes"]]
        answer = format_answer(d["label"], grid)
        about = {"label": d["label"], "kind": d["kind"], "position": position_of(d["kind"]), "study": uid}
        out.append({"task": "detection", "instruction": f"[detection] {d['label']}", "answer": answer, "boxes": grid, **about})
        out.append({"task": "refer", "instruction": f"[refer] where is the {d['label']}?", "answer": answer, "boxes": grid, **about})
        out.append({"task": "identify", "instruction": f"[identify] what is it in {format_box(grid[0])}",
                    "answer": d["label"], "boxes": grid[:1], **about})
    return out
