"""The front table of results/README.md: each paper's "reproduced?" is decided by its paired comparisons, and the
index renders what the aggregations wrote, never typed words."""

import json

import pandas as pd

from medlib import report
from medlib.experiments import clinicalblip_results as cres
from medlib.experiments import minigpt_med_results as gres
from tests.test_clinicalblip_testbed import _tables


def _minigpt_tables(effects):
    """A summary and the claim's tested parts as MiniGPT-Med's aggregation computes them."""
    from medlib import claims as cl
    from tests.test_claims import paired

    results = cl.test_parts(gres.CLAIM, {k: paired(e, seed=i) for i, (k, e) in enumerate(effects.items())}, num_resamples=500)
    row = {"iou_variable": 0.2, "iou_variable_lo": 0.18, "iou_variable_hi": 0.22, "iou_fixed": 0.8, "iou_fixed_lo": 0.78,
           "iou_fixed_hi": 0.82, "iou_all": 0.4, "iou_lenient": 0.42, "runs": 9, "zoo_builds": 3, "malformed_share": 0.0}
    summary = pd.DataFrame([{"system": gres.system_name(gres.PAPER_ARM), **row},
                            {"system": gres.system_name(gres.ZERO_SHOT), **row, "runs": 3, "iou_variable": 0.05,
                             "malformed_share": 0.4},
                            {"system": "label prior (no image)", "runs": 0, "iou_variable": 0.15, "iou_fixed": 0.8}])
    return summary, results


def test_minigpt_med_prints_the_word_its_claim_parts_decide_and_names_the_starting_checkpoint():
    from medlib import claims as cl

    for effects, word in (({"beats_prior": 0.2, "image": 0.2, "fine_tuning_adds": 0.2}, "reproduced"),
                          ({"beats_prior": 0.2, "image": 0.2, "fine_tuning_adds": 0.0}, "partly"),
                          ({"beats_prior": 0.2, "image": 0.2, "fine_tuning_adds": -0.2}, "not reproduced"),
                          ({"beats_prior": 0.0, "image": 0.0, "fine_tuning_adds": 0.0}, "inconclusive"),
                          ({"beats_prior": 0.0, "image": 0.2, "fine_tuning_adds": 0.2}, "partly")):
        summary, results = _minigpt_tables(effects)
        assert cl.word(results) == word
        h = gres.headline(summary, results, word)
        assert h["reproduced"] == word and "normal anatomy of the pre-training renders, no finding label" in h["finds"]
        assert "fine-tuning adds over its starting checkpoint: " in h["finds"]
        text = gres.verdict(summary, results, pd.DataFrame(), pd.DataFrame(columns=["finding", "position", "model_lo", "prior_hi"]), word)
        assert f"**{word}**" in text and "40% of its answers hold no box" in text
        # beside a word whose prior part fails: what holds would hold for a model that learnt only the label's place
        prior_fails = effects["beats_prior"] <= 0
        assert ("**What the word rests on**" in text) == prior_fails
        if prior_fails:
            assert "The label prior alone adds +0.100 over the starting checkpoint" in text


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
