"""Grounding metrics for boxes written as text (MiniGPT-Med).

Strict (medlib's): an answer with no well-formed box scores IoU 0; several predicted and reference
boxes are matched one-to-one by IoU (Hungarian), and a sample's IoU is the sum of matched IoUs over
max(#predicted, #reference), so extra and missing boxes cost. Lenient (MiniGPT-Med's evaluation):
answers without a parsable box are dropped from the mean; every other answer is kept, each of its
boxes scored by its best IoU with any reference box and the answer by the mean over its boxes (no
one-to-one matching, so a missing or duplicated box costs nothing).

One rule for every function here: a box's corners are taken in either order (a reference written
(x2, y2, x1, y1) is the same box), and a sample with no reference box is answered correctly by no
box (IoU 1) and wrongly by any box (IoU 0). What counts as a predicted box, and what as malformed,
is `medlib.boxes.read_boxes`; malformed answers are counted (`malformed_share`), never repaired.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from medlib.boxes import read_boxes
from medlib.metrics.bootstrap import study_bootstrap

RSNA_THRESHOLDS = tuple(round(0.4 + 0.05 * i, 2) for i in range(8))  # 0.40 .. 0.75


def _check_box(b, where: str):
    if len(b) != 4 or not all(isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v) for v in b):
        raise ValueError(f"{where}: a box must be 4 finite numbers (x1, y1, x2, y2), got {b!r}")


def iou_matrix(pred, gold) -> np.ndarray:
    """IoU of every predicted box with every reference box, (P, G); any consistent unit."""
    for b in pred:
        _check_box(b, "predicted box")
    for b in gold:
        _check_box(b, "reference box")
    if not len(pred) or not len(gold):
        return np.zeros((len(pred), len(gold)))
    p, g = (_ordered(np.asarray(b, float)) for b in (pred, gold))
    p, g = p[:, None], g[None]
    iw = np.clip(np.minimum(p[..., 2], g[..., 2]) - np.maximum(p[..., 0], g[..., 0]), 0, None)
    ih = np.clip(np.minimum(p[..., 3], g[..., 3]) - np.maximum(p[..., 1], g[..., 1]), 0, None)
    inter = iw * ih
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(p) + area(g) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _ordered(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes with x1 <= x2 and y1 <= y2."""
    return np.stack([np.minimum(boxes[:, 0], boxes[:, 2]), np.minimum(boxes[:, 1], boxes[:, 3]),
                     np.maximum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 1], boxes[:, 3])], axis=1)


def matched_ious(pred, gold) -> list[float]:
    """IoUs of the one-to-one Hungarian matching that maximises total IoU."""
    # imported here: only for the box matching
    from scipy.optimize import linear_sum_assignment

    m = iou_matrix(pred, gold)
    if m.size == 0:
        return []
    rows, cols = linear_sum_assignment(-m)
    return [float(m[r, c]) for r, c in zip(rows, cols)]


def strict_iou(pred, gold) -> float:
    if not gold and not pred:
        return 1.0
    return float(sum(matched_ious(pred, gold)) / max(len(pred), len(gold)))


def rsna_precision(pred, gold, thresholds=RSNA_THRESHOLDS) -> float | None:
    """RSNA Pneumonia's image score: mean over thresholds of TP / (TP + FP + FN). Boxes carry no
    confidence here, so the matching is Hungarian rather than by confidence. None when an image
    has neither predicted nor reference boxes (RSNA skips those)."""
    if not pred and not gold:
        return None
    ious = matched_ious(pred, gold)
    scores = []
    for t in thresholds:
        tp = sum(i > t for i in ious)
        scores.append(tp / (tp + (len(pred) - tp) + (len(gold) - tp)))
    return float(np.mean(scores))


def lenient_iou(pred, gold) -> float | None:
    """MiniGPT-Med's way: None (dropped) for an answer without a box or a sample without a reference box;
    else the mean over predicted boxes of each one's best IoU with a reference box."""
    if not pred or not gold:
        return None
    return float(iou_matrix(pred, gold).max(axis=1).mean())


def grounding_scores(outputs: list[str], references: list[list]) -> dict:
    """Score model text against reference boxes (both on the 0..100 grid).
    Returns means and per-sample lists: strict IoU, Acc@0.5, RSNA precision and lenient IoU (NaN
    where RSNA skips an image or the lenient mean drops the answer), malformed."""
    if len(outputs) != len(references):
        raise ValueError(f"grounding_scores: {len(outputs)} outputs but {len(references)} references")
    strict, rsna, lenient, parsable, malformed = [], [], [], [], []
    for text, gold in zip(outputs, references):
        gold = [tuple(b) for b in gold]
        pred, bad = read_boxes(text)
        parsable.append(bool(pred))
        malformed.append(bad > 0)
        strict.append(strict_iou(pred, gold))
        r, kept = rsna_precision(pred, gold), lenient_iou(pred, gold)
        rsna.append(float("nan") if r is None else r)
        lenient.append(float("nan") if kept is None else kept)
    strict_arr, rsna_arr, lenient_arr = np.array(strict), np.array(rsna), np.array(lenient)
    return {
        "iou_strict": float(strict_arr.mean()) if len(strict) else float("nan"),
        "acc_at_05": float((strict_arr >= 0.5).mean()) if len(strict) else float("nan"),
        "rsna_map": float(np.nanmean(rsna_arr)) if np.isfinite(rsna_arr).any() else float("nan"),
        "iou_lenient": float(np.nanmean(lenient_arr)) if np.isfinite(lenient_arr).any() else float("nan"),
        "lenient_kept": int(np.isfinite(lenient_arr).sum()), "parsable_share": float(np.mean(parsable)) if parsable else float("nan"),
        "malformed_share": float(np.mean(malformed)) if malformed else float("nan"),
        "per_sample": {"iou_strict": strict, "acc_at_05": [float(s >= 0.5) for s in strict], "rsna_precision": rsna,
                       "iou_lenient": lenient, "malformed": [float(m) for m in malformed]},
    }


POSITIONS = ("variable", "fixed")


def grounding_summary(outputs: list[str], samples: list[dict], seed: int = 0) -> tuple[dict, dict]:
    """(summary, detail) of one system's answers: strict IoU, Acc@0.5, RSNA mAP and the lenient IoU over
    all samples and per `position` ("variable" / "fixed"), with 95 % intervals that resample *studies*
    (`study_bootstrap`); detail holds the per-sample scores and the per-finding means."""
    gold = [s["boxes"] for s in samples]
    sc = grounding_scores(outputs, gold)
    per, studies = sc["per_sample"], [s["study"] for s in samples]
    summary = {k: v for k, v in sc.items() if k != "per_sample"}
    summary["findings"] = len(samples)
    for k in ("iou_strict", "acc_at_05"):
        ci = study_bootstrap(per[k], studies, seed=seed)
        summary[f"{k}_lo"], summary[f"{k}_hi"] = ci["lo"], ci["hi"]
    for pos in POSITIONS:
        idx = [i for i, s in enumerate(samples) if s.get("position") == pos]
        if idx:
            ci = study_bootstrap([per["iou_strict"][i] for i in idx], [studies[i] for i in idx], seed=seed)
            summary[f"iou_strict_{pos}"], summary[f"iou_strict_{pos}_lo"], summary[f"iou_strict_{pos}_hi"] = ci["mean"], ci["lo"], ci["hi"]
            summary[f"acc_at_05_{pos}"] = float(np.mean([per["acc_at_05"][i] for i in idx]))
            summary[f"findings_{pos}"] = len(idx)
    per_class = {}
    for lab in sorted({s["label"] for s in samples}):
        idx = [i for i, s in enumerate(samples) if s["label"] == lab]
        per_class[lab] = {"n": len(idx), "position": samples[idx[0]].get("position", ""),
                          "iou_strict": float(np.mean([per["iou_strict"][i] for i in idx]))}
    return summary, {"per_sample": per, "per_class": per_class}


def grounding_rows(split: str, samples: list[dict], model: dict, shuffled: dict | None = None, prior: dict | None = None,
               digits: int = 4):
    """One row per finding of `split`, in the order of `samples`: its study, label and position and each
    system's per-sample scores (model; on test also the image-shuffled control and the label prior, with
    `shuffled_` / `prior_` prefixes). What the aggregation's study bootstraps read."""
    frame = pd.DataFrame({"split": split, "study": [s["study"] for s in samples], "label": [s["label"] for s in samples],
                          "position": [s.get("position", "") for s in samples]})
    for prefix, per in (("", model), ("shuffled_", shuffled), ("prior_", prior)):
        for k in ("iou_strict", "acc_at_05", "rsna_precision", "iou_lenient", "malformed"):
            frame[prefix + k] = np.round(per[k], digits) if per is not None else np.nan
    return frame
