"""Scoring a VQA arm as MedBLIP does, and naming degenerate answers: the summary with intervals over studies, accuracy
on "is there X?" per finding, and each question type's most common answer."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from medlib.metrics.bootstrap import study_bootstrap
from medlib.metrics.text import closed_accuracy, exact_match, medblip_scores

QUESTION_TYPES = ("abnormality", "presence", "location", "level", "view", "type")


def score(predictions: list[str], samples: list[dict]) -> tuple[dict, dict]:
    """(summary metrics with 95 % intervals over test studies, per-sample scores). MedBLIP's protocol
    (see metrics.text); closed accuracy is exact match on the yes / no questions."""
    refs = [s["answer"] for s in samples]
    per = medblip_scores(predictions, refs)
    per["exact_match"] = exact_match(predictions, refs)
    studies = [s["study"] for s in samples]
    summary = {}
    for k, v in per.items():
        ci = study_bootstrap(v, studies)
        summary[k], summary[f"{k}_lo"], summary[f"{k}_hi"] = ci["mean"], ci["lo"], ci["hi"]
    types = [s["question_type"] for s in samples]
    summary["closed_accuracy"] = closed_accuracy(predictions, refs, types)["closed_accuracy"]
    closed = [i for i, r in enumerate(refs) if r in ("yes", "no")]
    summary["closed_accuracy_lo"] = summary["closed_accuracy_hi"] = float("nan")  # no yes / no question: no interval
    if closed:
        ci = study_bootstrap([per["exact_match"][i] for i in closed], [studies[i] for i in closed])
        summary["closed_accuracy_lo"], summary["closed_accuracy_hi"] = ci["lo"], ci["hi"]
    for qt in QUESTION_TYPES:
        sel = [i for i, t in enumerate(types) if t == qt]
        if sel:
            summary[f"rougeL_{qt}"] = float(np.mean([per["rougeL"][i] for i in sel]))
    return summary, per


def presence_by_finding(samples: list[dict], correct):
    """Accuracy on "is there X?" per finding X, with its yes / no counts: which findings a model reads."""
    rows = [{"finding": s["question"][len("is there "):].rstrip("?"), "answer": s["answer"], "correct": float(c)}
            for s, c in zip(samples, correct) if s["question_type"] == "presence" and s["question"].startswith("is there ")
            and not s["question"].startswith("is there no ")]
    if not rows:
        return pd.DataFrame(columns=["finding", "questions", "yes", "accuracy"])
    df = pd.DataFrame(rows)
    return (df.groupby("finding").agg(questions=("correct", "size"), yes=("answer", lambda a: int((a == "yes").sum())),
                                      accuracy=("correct", "mean")).reset_index().sort_values("questions", ascending=False))


def answer_concentration(predictions: list[str], samples: list[dict]):
    """Per question type: the model's most common answer and its share, beside the references' — one
    answer for every image is named here, not averaged away."""
    rows = []
    for qt in dict.fromkeys(s["question_type"] for s in samples):
        pred = [p for p, s in zip(predictions, samples) if s["question_type"] == qt]
        ref = [s["answer"] for s in samples if s["question_type"] == qt]
        (top, n), (rtop, rn) = Counter(pred).most_common(1)[0], Counter(ref).most_common(1)[0]
        rows.append({"question_type": qt, "questions": len(pred), "distinct_predictions": len(set(pred)),
                     "top_prediction": top, "top_prediction_share": n / len(pred),
                     "distinct_references": len(set(ref)), "top_reference": rtop, "top_reference_share": rn / len(ref)})
    return pd.DataFrame(rows)
