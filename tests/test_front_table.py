"""The front table of results/README.md: each paper's "reproduced?" is decided by its paired comparisons, and the
index renders what the aggregations wrote, never typed words."""

import json

import pandas as pd

from medlib import report
from medlib.experiments import clinicalblip_results as cres
from medlib.experiments import medblip_results as mres
from medlib.experiments import minigpt_med_results as gres
from tests.test_clinicalblip_testbed import _tables


def _medblip(r1_diff=0.03, r1_p=0.01, image_holds=True):
    summary = pd.DataFrame([{"augment": True, "conv_stem": False, "unfreeze_ratio": r, "rougeL": 0.6, "rougeL_lo": 0.58,
                             "rougeL_hi": 0.62} for r in (0.0, 0.3125, 1.0)])
    row = {"metric": "ROUGE-L", "difference": 0.1, "ci_lo": 0.05, "ci_hi": 0.15, "p_holm": 0.001, "holds": True}
    claims = pd.DataFrame([
        {**row, "claim": "best (0.3125) - image-shuffled control", "holds": image_holds},
        {**row, "claim": "ratio 0.3125 - ratio 0"},
        {**row, "claim": "ratio 0.3125 - ratio 1", "difference": r1_diff, "ci_lo": r1_diff - 0.02, "ci_hi": r1_diff + 0.02,
         "p_holm": r1_p, "holds": r1_diff > 0 and r1_p < 0.05}])
    return summary, claims


def test_medblip_is_reproduced_only_when_both_comparisons_hold_on_a_model_that_reads_the_image():
    assert mres.headline(*_medblip(), best=0.3125)["reproduced"] == "yes"
    fails = mres.headline(*_medblip(r1_diff=-0.03, r1_p=0.01), best=0.3125)
    assert fails["reproduced"] == "no" and fails["state"] == "fails"
    plateau = mres.headline(*_medblip(r1_diff=0.01, r1_p=0.4), best=0.3125)
    assert plateau["reproduced"] == "no" and plateau["state"] == "plateau"
    blind = mres.headline(*_medblip(image_holds=False), best=0.3125)
    assert blind["reproduced"] == "partly" and "not shown to use the image" in blind["finds"]
    assert "ratio 0.3125 - ratio 1: +0.030 [+0.010, +0.050]" in mres.headline(*_medblip(), best=0.3125)["finds"]


def test_minigpt_med_counts_the_controls_it_beats_on_position_variable_findings():
    summary = pd.DataFrame([{"arm": "a", "chosen": True, "iou_variable": 0.2, "iou_variable_lo": 0.18, "iou_variable_hi": 0.22}])

    def claims(prior, shuffled):
        return pd.DataFrame([{"claim": f"best - {w}", "findings": f"position-{pos}", "difference": 0.05, "ci_lo": 0.01,
                              "ci_hi": 0.09, "holds": holds if pos == "variable" else True}
                             for w, holds in (("label prior", prior), ("image-shuffled control", shuffled))
                             for pos in ("variable", "fixed")])

    assert gres.headline(summary, claims(True, True))["reproduced"] == "yes"
    assert gres.headline(summary, claims(True, False))["reproduced"] == "partly"
    # position-fixed findings hold in every case above: they do not count, the label alone says where
    assert gres.headline(summary, claims(False, False))["reproduced"] == "no"


def test_clinicalblip_is_not_tested_when_its_generator_fails_the_sanity_check():
    h = cres.headline(*_tables(leak_share=0.38, leak_lo=0.05))
    # stages: cannot be told apart; prior: fails; nothing holds
    assert h["reproduced"] == "no" and "multi-stage claim on abnormal-only CE-F1: cannot be told apart" in h["finds"]
    broken = cres.headline(*_tables(leak_share=0.02, leak_lo=-0.01))
    assert broken["reproduced"] == "not tested"


def test_the_index_begins_with_the_table_the_aggregations_wrote(tmp_path):
    for exp, nb, word in (("b_second", "notebooks/02_x.ipynb", "no"), ("a_first", "notebooks/01_y.ipynb", "yes")):
        folder = tmp_path / exp / "tiny"
        folder.mkdir(parents=True)
        (folder / "headline.json").write_text(json.dumps(
            {"paper": exp, "claim": "c", "paper_number": "n", "finds": f"finds {exp}", "state": "s", "reproduced": word,
             "notebook": nb, "figure": "f.png"}))
        (folder / "verdict.md").write_text(f"- {exp} verdict\n")
    text = report.write_index(tmp_path).read_text()
    table = text.split("## The papers' claims on the tiny profile")[1]
    assert table.index("| a_first |") < table.index("| b_second |")  # in notebook order
    assert "| finds b_second | **no** | [notebook](../notebooks/02_x.ipynb), [verdict](b_second/tiny/verdict.md)" in table
    assert "not run yet, so no winner is claimed" in table
    assert text.index("The papers' claims") < text.index("## a_first — tiny profile") < text.index("- a_first verdict")
