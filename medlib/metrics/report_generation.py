"""A generated report scored as the field scores it (R2Gen's cleaned texts): pycocoevalcap's BLEU, METEOR, ROUGE-L and
CIDEr, nltk's METEOR, rouge-score's ROUGE-L, clinical efficacy from medlib's labeller, and BERT-Sim; with one
run's intervals over reports and, per report, what an aggregation resamples. `relabel_references` labels a committed
run's reference reports again when the labeller changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medlib import fileio
from medlib.metrics.bootstrap import bootstrap_ci, bootstrap_statistic
from medlib.metrics.clinical import (
    ABNORMAL,
    OBSERVATIONS,
    ce_counts,
    ce_scores,
    label_matrix,
    micro_f1,
    names_finding,
)
from medlib.metrics.text import bert_sim, coco_bleu_interval, coco_scores, nltk_meteor

PER_REPORT_SCORES = ("meteor", "meteor_nltk", "rougeL", "bert_sim")  # what an arm keeps per report beside its labels


def score(predictions: list[str], references: list[str]) -> tuple[dict, dict]:
    """(summary, per-report scores). pycocoevalcap BLEU-1..4 (corpus, with a bootstrap interval of
    the corpus value), METEOR (mean of per-report
    scores; `meteor_corpus` is pycocoevalcap's corpus value), ROUGE-L and CIDEr; nltk's METEOR;
    rouge-score's ROUGE-L; CE precision / recall / F1 from medlib's labeller (14 observations, `ce13_` the 13
    abnormal ones: the headline, `ce5_` the competition labels); BERT-Sim. `_lo`/`_hi`: 95 % bootstrap
    interval over reports of the per-report mean (for CE-F1, of the micro F1 itself). Per report, `labels`
    holds the generated report's 14 labels as a 0/1 string (the aggregation's CE bootstraps read them)."""
    # imported here: heavy (rouge_score and nltk take about 1 s each to import): loaded by the metric that uses it
    from rouge_score import rouge_scorer

    coco = coco_scores(predictions, references)
    per = dict(coco.pop("per_sample"))
    summary = {k: v for k, v in coco.items() if isinstance(v, (int, float)) or v is None}
    summary.update(coco_bleu_interval(predictions, references))  # of the corpus BLEU itself
    nl = nltk_meteor(predictions, references)
    summary["meteor_nltk"] = nl["meteor_nltk"]
    per.update(nl.get("per_sample", {}))
    rs = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    per["rougeL_rouge_score"] = [rs.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]
    summary["rougeL_rouge_score"] = float(np.mean(per["rougeL_rouge_score"]))
    bs = bert_sim(predictions, references)
    summary["bert_sim"], per["bert_sim"] = bs["bert_sim"], bs["per_sample"]
    clinical, labelled = score_labels(predictions, references)
    summary.update(clinical)
    # pycocoevalcap's METEOR is a corpus statistic, not the mean of its per-report scores; the headline
    # here is the per-report mean (what the interval is about) and the corpus value is kept beside it.
    summary["meteor_corpus"] = summary.get("meteor")
    if "meteor" in per:
        summary["meteor"] = float(np.mean(per["meteor"]))
    for k in ("meteor", "meteor_nltk", "rougeL", "rougeL_rouge_score", "cider", "bert_sim"):
        if k in per:
            ci = bootstrap_ci(per[k])
            summary[f"{k}_lo"], summary[f"{k}_hi"] = ci["lo"], ci["hi"]
    per["labels"] = labelled["labels"]
    return summary, per


def score_labels(predictions: list[str], references: list[str]) -> tuple[dict, dict]:
    """The clinical part of `score` alone (CE over 14, 13 and 5 observations, one run's intervals of the micro
    F1s over reports, the share naming a finding) and per report the labels (as strings, and both label
    matrices): what validation and the image-shuffled control need, without the text metrics' cost."""
    labels = label_matrix(predictions), label_matrix(references)  # the labeller runs once per report
    summary = {k: v for k, v in ce_scores(predictions, references, labels).items() if k != "per_sample"}
    # How often a report names a finding: a model that writes the normal report every time shows up here first.
    for name, lab in zip(("abnormal_share", "abnormal_share_reference"), labels):
        summary[name] = float(names_finding(lab).mean())
    abnormal = [OBSERVATIONS.index(o) for o in ABNORMAL]
    for name, cols in (("ce_micro_f1", slice(None)), ("ce13_micro_f1", abnormal)):
        ci = bootstrap_statistic(ce_counts(predictions, references, (labels[0][:, cols], labels[1][:, cols])), micro_f1)
        summary[f"{name}_lo"], summary[f"{name}_hi"] = ci["lo"], ci["hi"]
    return summary, {"labels": label_strings(labels[0]), "matrix": labels[0], "reference_matrix": labels[1]}


def label_strings(labels: np.ndarray) -> list[str]:
    """Each row of a `label_matrix` as a string of 14 digits, in `OBSERVATIONS` order."""
    return ["".join(map(str, row)) for row in labels]


def relabel_references(items_path: Path) -> list[str]:
    """The reference reports of a committed `evaluation_items.csv.gz` labelled again by today's labeller; the file is
    rewritten only when a label changed. Returns "split:id" of each reference whose labels changed. The reports the
    arms wrote keep the labels they were given when scored: only their labels, not their text, are kept."""
    items = pd.read_csv(items_path, keep_default_na=False, dtype=str)
    new = label_strings(label_matrix(items.reference.tolist()))
    old = items.reference_labels.str.zfill(len(OBSERVATIONS)).tolist()
    changed = [f"{sp}:{i}" for sp, i, a, b in zip(items.split, items.id, old, new) if a != b]
    if changed:
        items["reference_labels"] = new
        fileio.write_with(items_path, lambda p: items.to_csv(p, index=False, compression={"method": "gzip", "mtime": 0}))
    return changed
