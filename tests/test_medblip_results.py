"""MedBLIP's aggregation on synthetic arms whose truth is known: seven ratios on three zoo builds, three seeds each."""

import json

import numpy as np
import pandas as pd
import pytest

from medlib.experiments import medblip_results as res
from medlib.runs import RUN_FILE

RATIOS = (0.0, 0.125, 0.25, 0.3125, 0.375, 0.5, 1.0)


def write_arms(root, level: dict, val_level: dict | None = None, view_answer=None):
    """One folder per (ratio, build, seed); each test question's ROUGE-L and exact match drawn around `level[ratio]`.
    `view_answer`: every run answers the view questions with this one answer."""
    rng = np.random.default_rng(0)
    types = ["presence"] * 60 + ["view"] * 20
    items = pd.DataFrame({"study": [f"s{k // 2}" for k in range(80)], "question_type": types,
                          "question": [f"is there f{k % 5}?" if t == "presence" else "which view?" for k, t in enumerate(types)],
                          "answer": [("yes" if k % 2 else "no") if t == "presence" else ("pa" if k % 3 else "ap") for k, t in enumerate(types)],
                          "split": "test"})
    dirs = []
    for r in RATIOS:
        for b in (0, 1, 2):
            for s in (0, 1, 2):
                d = root / f"r{r}_b{b}_s{s}"
                d.mkdir(parents=True)
                hit = (rng.random(80) < level[r]).astype(float)
                per = pd.DataFrame({"split": "test", "rougeL": hit, "exact_match": hit,
                                    "shuffled_rougeL": (rng.random(80) < 0.5).astype(float),
                                    "shuffled_exact_match": (rng.random(80) < 0.5).astype(float),
                                    "prior_rougeL": 0.5, "prior_exact_match": (np.arange(80) % 2).astype(float)})
                per.to_csv(d / "per_sample.csv.gz", index=False)
                preds = np.where(hit > 0, items.answer, "no")
                if view_answer:
                    preds = np.where(items.question_type == "view", view_answer, preds)
                pd.DataFrame({"split": "test", "item": range(80), "study": items.study, "prediction": preds,
                              "shuffled_prediction": ""}).to_csv(d / "predictions.csv.gz", index=False)
                if not dirs:
                    items.to_csv(d / "evaluation_items.csv.gz", index=False)
                val = (val_level or level)[r] + 0.001 * s
                (d / RUN_FILE).write_text(json.dumps({
                    "run_info": {"parameters": {"unfreeze_ratio": r, "zoo_seed": b, "seed": s, "augment": True, "conv_stem": False,
                                                "num_epochs": 2},
                                 "duration_s": 60, "data_fingerprint": "f"},
                    "train_info": {"status": "finished", "metrics": {"val": {"rougeL": val}}, "trainable_params": int(1000 * r),
                                   "best_step": 10 if r else 5, "steps_per_epoch": 10,
                                   "val_curve": [[5, 1.0], [10, 0.9 if r else 1.1]]}}))
                dirs.append(d)
    return dirs


def aggregate(tmp_path, level, **kw):
    out = tmp_path / "out"
    out.mkdir()
    res.aggregate(write_arms(tmp_path / "arms", level, **kw), out)
    return out, json.loads((out / "headline.json").read_text()), (out / "verdict.md").read_text()


def test_a_clear_optimum_at_the_papers_ratio_is_reproduced(tmp_path):
    level = {0.0: 0.3, 0.125: 0.5, 0.25: 0.6, 0.3125: 0.95, 0.375: 0.6, 0.5: 0.5, 1.0: 0.4}
    out, head, verdict = aggregate(tmp_path, level)
    assert head["reproduced"] == "reproduced"
    assert "**The paper's claim** (unfreezing part of the LLM's fully connected layers beats 0 % and 100 %; best at 31.25 %): " \
           "**reproduced**." in verdict
    claim = pd.read_csv(out / "claim.csv")
    assert claim.state.tolist() == ["holds"] * 6 and (claim[["build_0", "build_1", "build_2"]] > 0).all().all()


def test_a_plateau_is_named_and_the_word_is_at_most_partly(tmp_path):
    level = {0.0: 0.3, 0.125: 0.8, 0.25: 0.8, 0.3125: 0.8, 0.375: 0.8, 0.5: 0.8, 1.0: 0.8}
    out, head, verdict = aggregate(tmp_path, level)
    assert head["reproduced"] == "partly"
    assert "holds: 31.25 % beats 0 %" in head["finds"] and "plateau from 12.5 % to 100 %" in head["finds"]
    assert "run from 12.5 % to 100 %" in verdict and f"**{head['reproduced']}**" in verdict
    # every ratio but 0 kept its last check: the budget, not a plateau, ended their training, and both say so (the
    # list runs in ratio order, so 0 % would come first)
    assert "Still improving when the budget ended (the last check kept): 12.5 % in 9 of 9 runs" in verdict
    assert "6 of 7 ratios still improving in most runs when the 2-epoch budget ended" in head["finds"]


def test_a_better_ratio_elsewhere_is_not_reproduced(tmp_path):
    level = {0.0: 0.3, 0.125: 0.6, 0.25: 0.6, 0.3125: 0.6, 0.375: 0.6, 0.5: 0.6, 1.0: 0.95}
    _, head, verdict = aggregate(tmp_path, level)
    assert head["reproduced"] == "not reproduced"
    assert "a part is reversed: 31.25 % beats 100 %" in verdict
    assert "The best other ratio on validation is 100 %." in verdict


def test_one_answer_for_every_image_is_named_without_a_cut(tmp_path):
    level = {r: 0.7 for r in RATIOS}
    out, _, verdict = aggregate(tmp_path, level, view_answer="pa")
    types = pd.read_csv(out / "question_types.csv").set_index("question_type")
    assert types.loc["view", "answers"] == "one answer for every image"
    assert types.loc["view", "distinct_references"] == 2
    assert "`view` questions: one answer for every image" in verdict


def test_the_choice_reads_validation_only(tmp_path):
    test_level = {r: 0.6 for r in RATIOS} | {0.5: 0.9}
    val_level = {r: 0.6 for r in RATIOS} | {0.125: 0.9}
    dirs = write_arms(tmp_path, test_level, val_level)
    assert res.best_ratio(dirs, exclude=(0.3125,)) == 0.125
    with pytest.raises(ValueError, match="no finished main arms"):
        res.best_ratio(dirs[:1], exclude=(0.0,))
