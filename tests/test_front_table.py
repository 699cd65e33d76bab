"""The front table of results/README.md: each paper's "reproduced?" is decided by its paired comparisons, and the
index renders what the aggregations wrote, never typed words."""

import json

import pandas as pd

from medlib import report
from medlib.experiments import clinicalblip_results as cres
from medlib.experiments import minigpt_med_results as gres
from tests.test_clinicalblip_testbed import _tables


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


def test_clinicalblip_prints_the_word_its_claim_parts_decide():
    from medlib import claims as cl

    summary, results, refs = _tables()
    h = cres.headline(summary, results, refs, cl.word(results))
    assert h["reproduced"] == "not reproduced" and "the prior-knowledge prompt helps stage 1 -> 2: " in h["finds"]
    assert "nearest-neighbour retrieval, no generator: -0.100" in h["finds"]
    broken = _tables(leak_share=0.02, leak_lo=-0.01)
    assert "the oracle-leak sanity check did not pass" in cres.headline(broken[0], broken[1], broken[2], "x")["finds"]


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
