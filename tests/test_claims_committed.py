"""The committed MedBLIP results re-scored without medlib's scoring code: the kept answers give the committed
metric, and the front table, verdict and README say the same word."""

import json

import pandas as pd
import pytest
from rouge_score import rouge_scorer

from medlib.paths import REPO_ROOT

TINY = REPO_ROOT / "results" / "medblip" / "tiny"


@pytest.mark.skipif(not (TINY / "default" / "predictions.csv.gz").exists(), reason="no committed MedBLIP answers")
@pytest.mark.parametrize("arm", ["default", "seed=2,unfreeze_ratio=1,zoo_seed=2"])
def test_a_committed_arm_rescored_from_its_kept_answers_gives_its_committed_rouge_l(arm):
    items = pd.read_csv(TINY / "default" / "evaluation_items.csv.gz", keep_default_na=False)
    answers = pd.read_csv(TINY / arm / "predictions.csv.gz", keep_default_na=False)
    assert len(items) == len(answers) and (items.split.to_numpy() == answers.split.to_numpy()).all()
    assert (items.study.astype(str).to_numpy() == answers.study.astype(str).to_numpy()).all()
    test = answers.split == "test"
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(ref, pred)["rougeL"].fmeasure if pred.strip() else 0.0
             for ref, pred in zip(items.answer[test], answers.prediction[test])]
    committed = json.loads((TINY / arm / "run.json").read_text())["train_info"]["metrics"]
    assert committed["split"] == "test"
    assert sum(rouge) / len(rouge) == pytest.approx(committed["rougeL"], abs=1e-9)


@pytest.mark.parametrize("paper,folder", [("MedBLIP", "medblip"), ("ClinicalBLIP", "clinicalblip"), ("MiniGPT-Med", "minigpt_med")])
def test_front_table_verdict_and_readme_agree_on_the_word(paper, folder):
    tiny = REPO_ROOT / "results" / folder / "tiny"
    if not (tiny / "headline.json").exists():
        pytest.skip(f"no committed {paper} aggregation")
    word = json.loads((tiny / "headline.json").read_text())["reproduced"]
    assert "**The paper's claim** (" in (tiny / "verdict.md").read_text()
    assert f"): **{word}**." in (tiny / "verdict.md").read_text()
    front = (REPO_ROOT / "results" / "README.md").read_text().split("\n## ")[1]
    assert f"| **{word}** |" in next(line for line in front.splitlines() if line.startswith(f"| {paper} |"))
    assert f"{paper}'s claim: **{word}**" in (REPO_ROOT / "README.md").read_text()


CLINICALBLIP = REPO_ROOT / "results" / "clinicalblip" / "tiny"


@pytest.mark.skipif(not (CLINICALBLIP / "default" / "predictions.csv.gz").exists(), reason="no committed ClinicalBLIP reports")
def test_a_committed_clinicalblip_arm_relabelled_from_its_kept_reports_gives_its_committed_labels_and_ce_f1():
    """The kept reports, labelled again, give the labels every part of the claim was computed from, and the arm's
    abnormal-only CE-F1 from those labels and the references' alone (micro F1 over the 13 abnormal observations)."""
    import numpy as np

    from medlib.metrics.clinical import ABNORMAL, OBSERVATIONS, label_matrix

    reports = pd.read_csv(CLINICALBLIP / "default" / "predictions.csv.gz", keep_default_na=False)
    scored = pd.read_csv(CLINICALBLIP / "default" / "per_sample.csv.gz", keep_default_na=False, dtype={"labels": str})
    items = pd.read_csv(CLINICALBLIP / "default" / "evaluation_items.csv.gz", keep_default_na=False, dtype=str)
    test = reports[(reports.split == "test") & (reports.condition == "model")]
    labels = label_matrix(test.report.tolist())
    kept = scored[(scored.split == "test") & (scored.condition == "model")]["labels"].str.zfill(len(OBSERVATIONS))
    assert ["".join(map(str, row)) for row in labels] == kept.tolist()
    gold = np.array([[int(c) for c in s.zfill(len(OBSERVATIONS))] for s in items[items.split == "test"].reference_labels])
    idx = [OBSERVATIONS.index(o) for o in ABNORMAL]
    p, g = labels[:, idx], gold[:, idx]
    tp, fp, fn = (p & g).sum(), (p & (1 - g)).sum(), ((1 - p) & g).sum()
    committed = json.loads((CLINICALBLIP / "default" / "run.json").read_text())["train_info"]["metrics"]
    assert 2 * tp / (2 * tp + fp + fn) == pytest.approx(committed["ce13_micro_f1"], abs=1e-9)


MINIGPT = REPO_ROOT / "results" / "minigpt_med" / "tiny"


@pytest.mark.skipif(not (MINIGPT / "default" / "predictions.csv.gz").exists(), reason="no committed MiniGPT-Med answers")
def test_a_committed_minigpt_med_arm_rescored_from_its_kept_answers_gives_its_committed_strict_iou():
    """The kept answers, scored by a strict IoU written here (boxes read by medlib's one box rule, IoU and the
    one-to-one matching by scipy), give the arm's committed test strict IoU on position-variable findings."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    from medlib.boxes import parse_boxes

    def iou(p, g):
        p, g = sorted(p[::2]) + sorted(p[1::2]), sorted(g[::2]) + sorted(g[1::2])  # (x1, x2, y1, y2), corners in order
        w = max(0, min(p[1], g[1]) - max(p[0], g[0]))
        h = max(0, min(p[3], g[3]) - max(p[2], g[2]))
        union = (p[1] - p[0]) * (p[3] - p[2]) + (g[1] - g[0]) * (g[3] - g[2]) - w * h
        return w * h / union if union > 0 else 0.0

    def strict(answer, reference):
        pred, gold = parse_boxes(answer), parse_boxes(reference)
        if not pred or not gold:
            return float(not pred and not gold)
        m = np.array([[iou(p, g) for g in gold] for p in pred])
        rows, cols = linear_sum_assignment(-m)
        return m[rows, cols].sum() / max(len(pred), len(gold))

    items = pd.read_csv(MINIGPT / "default" / "evaluation_items.csv.gz", keep_default_na=False)
    answers = pd.read_csv(MINIGPT / "default" / "predictions.csv.gz", keep_default_na=False)
    assert len(items) == len(answers) and (items.split.to_numpy() == answers.split.to_numpy()).all()
    keep = ((items.split == "test") & (items.position == "variable")).to_numpy()
    scores = [strict(a, r) for a, r in zip(answers.model[keep], items.answer[keep])]
    committed = json.loads((MINIGPT / "default" / "run.json").read_text())["train_info"]["metrics"]["grounding"]
    assert float(np.mean(scores)) == pytest.approx(committed["iou_strict_variable"], abs=1e-9)


ADAPTATION = REPO_ROOT / "results" / "adaptation" / "tiny"


@pytest.mark.skipif(not (ADAPTATION / "default" / "predictions.csv.gz").exists(), reason="no committed notebook 04 answers")
def test_a_committed_notebook_04_arm_rescored_from_its_kept_answers_gives_its_committed_vqa_rouge_l():
    items = pd.read_csv(ADAPTATION / "default" / "evaluation_items.csv.gz", keep_default_na=False)
    answers = pd.read_csv(ADAPTATION / "default" / "predictions.csv.gz", keep_default_na=False)
    assert len(items) == len(answers) and (items.task.to_numpy() == answers.task.to_numpy()).all()
    keep = ((items.split == "test") & (items.task == "vqa")).to_numpy()
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [scorer.score(ref, pred)["rougeL"].fmeasure if pred.strip() else 0.0
             for ref, pred in zip(items.answer[keep], answers.model[keep])]
    committed = json.loads((ADAPTATION / "default" / "run.json").read_text())["train_info"]["metrics"]["test"]["vqa"]
    assert sum(rouge) / len(rouge) == pytest.approx(committed["rougeL"], abs=1e-9)


def test_notebook_04s_words_in_the_front_table_are_its_verdicts():
    if not (ADAPTATION / "comparison.json").exists():
        pytest.skip("no committed notebook 04 aggregation")
    claims = json.loads((ADAPTATION / "comparison.json").read_text())["claims"]
    verdict = (ADAPTATION / "verdict.md").read_text()
    front = (REPO_ROOT / "results" / "README.md").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    for c in claims:
        assert f"*{c['claim']}*: **{c['word']}**." in verdict
        assert f"{c['claim']}: **{c['word']}**" in front
        assert f"{c['task']} **{c['word']}**" in readme
