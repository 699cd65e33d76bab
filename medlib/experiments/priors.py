"""The text-only baselines every experiment is scored against, one per kind of answer, and what the papers and the
comparison (notebook 04) shape their data with alike. Each prior is fitted on training answers only: what a model
scores beyond it, it did not get from the words."""

from __future__ import annotations

from collections import Counter

import numpy as np

from medlib.boxes import format_answer
from medlib.data.synthcxr import testbed_vqa
from medlib.metrics.clinical import FINDINGS, label_report
from medlib.metrics.grounding import strict_iou

MAX_REPORT_TOKENS = {"iu_xray": 60, "mimic_cxr": 100}  # R2Gen's limits
VQA_PER_STUDY = 2


def question_prior(train: list[dict], samples: list[dict]) -> list[str]:
    """The text-only prior: for each question, the most common training answer to the same question
    string (else to its question type). What a model scores beyond it, it did not get from the words."""
    by_question, by_type = {}, {}
    for s in train:
        by_question.setdefault(s["question"], Counter())[s["answer"]] += 1
        by_type.setdefault(s["question_type"], Counter())[s["answer"]] += 1
    fallback = Counter(s["answer"] for s in train).most_common(1)[0][0]

    def guess(s):
        counts = by_question.get(s["question"]) or by_type.get(s["question_type"])
        return counts.most_common(1)[0][0] if counts else fallback
    return [guess(s) for s in samples]


def most_common_report(train: list[dict], n: int) -> list[str]:
    """The most frequent training report, for every test study."""
    return [Counter(s["reference"] for s in train).most_common(1)[0][0]] * n


def random_training_report(train: list[dict], n: int, seed: int = 0) -> list[str]:
    """A training report drawn at random for each test study: a text baseline that names each finding at its
    training frequency and knows nothing of the image (what a report generator must beat to be reading it;
    the most common report names no finding, so it scores 0 on abnormal-only CE-F1 by construction)."""
    rng = np.random.default_rng(seed)
    return [train[j]["reference"] for j in rng.integers(0, len(train), size=n)]


def label_prior(train: list[dict], samples: list[dict], max_candidates: int = 64, max_pool: int = 256) -> list[str]:
    """The text-only grounding prior, fitted on training answers only: for each label its typical box set,
    with as many boxes as the label usually has (both lungs for a bilateral finding), written as text. The
    typical set is the medoid: of the training box sets with the label's most common box count, the one
    with the highest mean strict IoU against all of the label's training box sets (the model's own score).
    A label never seen in training gets the medoid over all labels."""
    by_label: dict[str, list] = {}
    for s in train:
        if s["task"] == "detection":
            by_label.setdefault(s["label"], []).append([tuple(b) for b in s["boxes"]])
    if not by_label:
        raise ValueError("label_prior: the training mixture has no [detection] samples to fit the prior on")
    rng = np.random.default_rng(0)

    def medoid(sets):
        counts = Counter(len(b) for b in sets)
        k = max(counts, key=lambda n: (counts[n], -n))  # the most common count; ties to fewer boxes
        cands = [b for b in sets if len(b) == k]
        cands = [cands[i] for i in sorted(rng.choice(len(cands), min(len(cands), max_candidates), replace=False))]
        pool = [sets[i] for i in sorted(rng.choice(len(sets), min(len(sets), max_pool), replace=False))]
        return max(cands, key=lambda c: np.mean([strict_iou(c, o) for o in pool]))

    typical = {lab: medoid(sets) for lab, sets in sorted(by_label.items())}
    fallback = medoid([b for sets in by_label.values() for b in sets])
    return [format_answer(s["label"], typical.get(s["label"], fallback)) for s in samples]


def findings_first(report: str) -> str:
    """The cleaned report with its sentences that name a finding (a positive or uncertain label on one of
    `FINDINGS`, by medlib's labeller) first, each group in its written order. IU X-Ray writes the normal
    sentences first and its reports are cut at 60 tokens: a finding came late or not at all, after the
    tokens that decide whether the report is the normal one."""
    sents = [t.strip(" .") for t in report.split(" . ")]
    sents = [t for t in sents if t]
    named = [any(label_report(t)[o] in (1, -1) for o in FINDINGS) for t in sents]
    ordered = [t for t, n in zip(sents, named) if n] + [t for t, n in zip(sents, named) if not n]
    return " . ".join(ordered) + " ." if ordered else ""


def vqa_per_study(questions: list[dict], k: int, seed: int = 0) -> list[dict]:
    """At most `k` of each study's questions, drawn once with a fixed seed (every arm trains on the same ones),
    in the order given."""
    rng = np.random.default_rng(seed)
    by_study: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        by_study.setdefault(q["study"], []).append(i)
    keep = {i for idx in by_study.values() for i in (idx if len(idx) <= k else rng.choice(idx, k, replace=False).tolist())}
    return [q for i, q in enumerate(questions) if i in keep]


def mean_box_baseline(train: list[dict], test: list[dict]) -> list[str]:
    """The mean training box of each finding (over its [detection] samples), written as text: a weak
    prior (it averages a left and a right box into one midline box), kept to compare with older runs."""
    by_label: dict[str, list] = {}
    for s in train:
        if s["task"] in ("detection", "refer"):
            by_label.setdefault(s["label"], []).extend(s["boxes"])
    all_boxes = [b for v in by_label.values() for b in v] or [(25, 25, 75, 75)]
    out = []
    for s in test:
        boxes = by_label.get(s["label"], all_boxes)
        out.append(format_answer(s["label"], [tuple(int(round(v)) for v in np.mean(boxes, axis=0))]))
    return out


def centred_baseline(test: list[dict]) -> list[str]:
    return [format_answer(s["label"], [(25, 25, 75, 75)]) for s in test]


def task_priors(train: list[dict], items: dict[str, list[dict]]) -> dict[str, list[str]]:
    """The text-only prior of each task, fitted on the training mixture: VQA the most common training answer
    to the same question; reports a training report drawn at random (it names each finding at its training
    frequency; the most common report names none and scores 0 abnormal-only CE-F1 by construction); grounding the
    label's typical box set."""
    vqa = [s for s in train if s["task"] == "vqa"]
    reports = [s for s in train if s["task"] == "report"]
    detection = [{**s, "task": "detection"} for s in train if s["task"] == "grounding"]
    return {"vqa": question_prior(vqa, items["vqa"]),
            "report": random_training_report(reports, len(items["report"])),
            "grounding": label_prior(detection, items["grounding"])}


def vqa_instructions(studies, seed: int) -> list[dict]:
    """The testbed's VQA set of these studies (`synthcxr.testbed_vqa`: no give-away questions, presence
    balanced per finding) as `[vqa]` samples."""
    index = {s.uid: s.index for s in studies}
    return [{"task": "vqa", "instruction": f"[vqa] {q['question']}", "answer": q["answer"], "study": q["study"],
             "question_type": q["question_type"], "image_index": index[q["study"]]} for q in testbed_vqa(studies, seed)]


def report_instructions(studies, instruction: str, words: int = 40) -> list[dict]:
    """MiniGPT-Med's `[report]`-style samples of these studies: the instruction, and the report's first `words` words."""
    return [{"task": "report", "instruction": instruction, "answer": " ".join(s.report_clean.split()[:words]),
             "study": s.uid, "image_index": s.index} for s in studies if s.report_clean]
