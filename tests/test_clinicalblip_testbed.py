"""ClinicalBLIP on the testbed: the training target's order, the prompts, decoding chosen on validation, the
abnormal-only CE statistics and their study-and-seed bootstrap, and the verdict's gates."""

import numpy as np
import pandas as pd
import pytest

from medlib.experiments import clinicalblip as exp
from medlib.experiments import clinicalblip_results as res
from medlib.experiments.common import Evaluation
from medlib.metrics.bootstrap import paired_study_count_bootstrap, study_count_bootstrap
from medlib.metrics.clinical import ABNORMAL, CE_STATISTICS, FIVE, OBSERVATIONS, prf, statistic_counts
from medlib.models import clinicalblip as cb


def test_findings_first_moves_the_sentences_that_name_a_finding_to_the_front():
    report = "the heart is normal in size . the lungs are clear . there is a calcified granuloma in the right upper lobe . no effusion ."
    assert exp.findings_first(report) == ("there is a calcified granuloma in the right upper lobe . the heart is normal in size . "
                                          "the lungs are clear . no effusion .")
    normal = "the heart is normal . no effusion ."
    assert exp.findings_first(normal) == normal  # nothing named: the order as written
    assert exp.findings_first("") == ""


def test_prompts_are_lower_case_with_the_tags_as_words():
    p = cb.prompt("Chest pain", "oracle-leak", ["Calcified Granuloma/lung/upper lobe/right"])
    assert p == p.lower() and "calcified granuloma lung upper lobe right" in p and "leaked from the answer" in p
    assert "indication: chest pain" in cb.prompt("Chest pain", "indication+checklist")
    with pytest.raises(ValueError, match="prior must be one of"):
        cb.prompt("", "tags")


def test_decoding_is_chosen_on_validation_by_abnormal_only_ce(monkeypatch):
    val = [{"reference": "there is a right pleural effusion ."}, {"reference": "the heart is normal ."}]
    written = {1: ["there is a right pleural effusion .", "the heart is normal ."],  # greedy: the finding
               3: ["the heart is normal .", "the heart is normal ."]}  # beam: the normal report twice

    def fake_generate(model, tok, qtok, samples, prompts, pixel_fn, num_beams, max_new_tokens, penalty):
        return written[num_beams]

    monkeypatch.setattr(exp, "generate_reports", fake_generate)
    choice, rows, reports = exp.choose_decoding(None, None, None, val, ["p", "p"], None, 10, candidates=((3, 1.2), (1, 1.0)))
    assert choice == (1, 1.0) and reports == written[1]
    assert [r["val_ce13_micro_f1"] for r in rows] == [0.0, 1.0] and rows[1]["val_abnormal_share"] == 0.5


@pytest.mark.parametrize("metric,observations,micro", [("ce13_micro_f1", ABNORMAL, True), ("ce13_macro_f1", ABNORMAL, False),
                                                        ("ce5_micro_f1", FIVE, True), ("ce_micro_f1", OBSERVATIONS, True)])
def test_ce_statistics_of_summed_counts_equal_the_labeller_scores(metric, observations, micro):
    rng = np.random.default_rng(3)
    pred, gold = rng.integers(0, 2, (40, 14)) * (rng.random((40, 14)) < 0.3), rng.integers(0, 2, (40, 14)) * (rng.random((40, 14)) < 0.3)
    idx = [OBSERVATIONS.index(o) for o in observations]
    want = prf(pred[:, idx], gold[:, idx])["micro_f1" if micro else "macro_f1"]
    c = statistic_counts(pred[None], gold[None], metric)
    got = study_count_bootstrap(c, CE_STATISTICS[metric][1], num_resamples=200)
    assert got["value"] == pytest.approx(want) and got["lo"] <= got["value"] <= got["hi"]


def test_the_count_bootstrap_resamples_seeds_and_pairs_studies():
    rng = np.random.default_rng(0)
    gold = (rng.random((60, 14)) < 0.3).astype(int)
    good = np.stack([gold, gold])  # two seeds that copy the reference
    noisy = np.stack([(rng.random((60, 14)) < 0.3).astype(int) for _ in range(2)])
    stat = CE_STATISTICS["ce13_micro_f1"][1]
    d = paired_study_count_bootstrap(statistic_counts(good, gold[None], "ce13_micro_f1"), statistic_counts(noisy, gold[None], "ce13_micro_f1"), stat)
    assert d["lo"] > 0 and d["p"] < 0.01
    same = paired_study_count_bootstrap(statistic_counts(noisy, gold[None], "ce13_micro_f1"), statistic_counts(noisy, gold[None], "ce13_micro_f1"), stat)
    assert same["diff"] == 0 and same["lo"] == same["hi"] == 0
    with pytest.raises(ValueError, match="same studies"):
        paired_study_count_bootstrap(statistic_counts(good, gold[None], "ce13_micro_f1"), statistic_counts(good[:, :10], gold[None, :10], "ce13_micro_f1"), stat)


def _tables(leak_share=0.38, leak_lo=0.05, effects=None, total_epochs=(3, 3, 3)):
    """A summary, the claim's tested parts and the references as the aggregation computes them, for the verdict."""
    from medlib import claims as cl
    from tests.test_claims import paired

    effects = effects or {"image": 0.2, "beats_random_report": 0.2, "beats_stage1": 0.0, "beats_stage2": 0.0, "prior_helps": -0.2}
    results = cl.test_parts(res.CLAIM, {k: paired(e, seed=i) for i, (k, e) in enumerate(effects.items())}, num_resamples=500)
    row = {"ce13_micro_f1": 0.3, "ce13_micro_f1_lo": 0.25, "ce13_micro_f1_hi": 0.35, "meteor": 0.2, "meteor_lo": 0.19,
           "meteor_hi": 0.21, "runs": 9, "zoo_builds": 3, "abnormal_share": 0.3, "runs_collapsed": 0,
           "abnormal_share_by_build": "30% / 30% / 30%", "collapsed_builds": ""}
    arms = [{"system": res.system_name((s, "indication+checklist")), "stages": s, "prior": "indication+checklist", **row,
             "epochs": e, "total_epochs": t}
            for s, e, t in zip(("stage1", "stage2", "stage1+2"), (*map(str, total_epochs[:2]), "1 + 2"), total_epochs)]
    summary = pd.DataFrame(arms + [
        {"system": res.system_name(res.LEAK), "stages": "stage1+2", "prior": "oracle-leak", **row, "abnormal_share": leak_share},
        {"system": res.system_name(("stage1", "none")), "stages": "stage1", "prior": "none", **row, "abnormal_share": 0.0,
         "runs_collapsed": 9, "abnormal_share_by_build": "0% / 0% / 0%", "collapsed_builds": "0 1 2", "epochs": "3",
         "total_epochs": 3},
        {"system": "reference reports", "runs": 0, "abnormal_share": 0.4}])
    refs = pd.DataFrame([{"key": "paper_retrieval", "reference": "stage 1 -> 2 minus nearest-neighbour retrieval", "difference": -0.1, "ci_lo": -0.15,
                          "ci_hi": -0.05, "runs": 9},
                         {"key": "sanity", "reference": "oracle-leak minus stage 1 -> 2 without a prior (the sanity check)", "difference": 0.1,
                          "ci_lo": leak_lo, "ci_hi": 0.2, "runs": 1}])
    return summary, results, refs


def test_the_verdict_says_the_word_its_parts_decide_and_the_gates_beside_it():
    from medlib import claims as cl

    summary, results, refs = _tables()
    word = cl.word(results)
    text = res.verdict(summary, results, [], refs, word, (res.PAPER_ARM, 0.2))
    assert word == "not reproduced" and "**The paper's claim** (" in text and f"**{word}**" in text
    assert "the prior-knowledge prompt helps stage 1 -> 2" in text and "a part is reversed" in text
    assert "Sanity check (passed)" in text and "**One budget**" in text
    assert "stage1 / prior none names a finding in under 2% of its test reports in 9 of 9 runs" in text
    assert "What the word rests on" not in text  # the paper's arm names findings on every build
    collapsed = summary.copy()
    paper = collapsed.system == res.system_name(res.PAPER_ARM)
    collapsed.loc[paper, ["runs_collapsed", "collapsed_builds", "abnormal_share_by_build"]] = [6, "1 2", "30% / 1% / 0%"]
    said = res.verdict(collapsed, results, [], refs, word, (res.PAPER_ARM, 0.2))
    assert "collapses in 6 of 9 runs, on builds 1, 2" in said and "On build 0, where no run collapses: " in said
    broken = res.verdict(*_tables(leak_share=0.02, leak_lo=-0.01)[:2], [], _tables(leak_lo=-0.01)[2], word, (res.PAPER_ARM, 0.2))
    assert "Sanity check (FAILED)" in broken
    summary, results, refs = _tables(total_epochs=(1, 2, 3))
    assert "**Budgets differ**" in res.verdict(summary, results, [], refs, word, (res.PAPER_ARM, 0.2))
    held = _tables(effects={k: 0.2 for k in ("image", "beats_random_report", "beats_stage1", "beats_stage2", "prior_helps")})
    assert cl.word(held[1]) == "reproduced"
    no_image = _tables(effects={"image": 0.0, "beats_random_report": 0.2, "beats_stage1": 0.2, "beats_stage2": 0.2,
                                "prior_helps": 0.2})
    assert cl.word(no_image[1]) == "partly"
    assert "a check does not hold (stage 1 -> 2 beats its image-shuffled control)" in res.verdict(
        no_image[0], no_image[1], [], no_image[2], "partly", (res.PAPER_ARM, 0.2))


def test_what_to_notice_is_computed_from_the_run_it_sits_beside():
    model = {"abnormal_share": 0.3, "abnormal_share_reference": 0.45, "ce13_micro_f1": 0.2, "ce13_micro_f1_lo": 0.15,
             "ce13_micro_f1_hi": 0.25, "meteor": 0.18}
    shuffled = {**model, "ce13_micro_f1": 0.05, "ce13_micro_f1_lo": 0.02, "ce13_micro_f1_hi": 0.08}
    common = {"meteor": 0.15, "ce13_micro_f1": 0.0}
    retrieval = {"meteor": 0.16, "ce13_micro_f1": 0.34}
    def evaluation(model, shuffled, split="test"):
        return Evaluation(split, model, shuffled, {}, {}, None, None, None, [],
                          {"baselines": {"common": common, "random": {}, "retrieval": retrieval}})

    text = exp.what_to_notice(evaluation(model, shuffled))
    assert "names a finding in 30% of its test reports; the references do in 45%" in text
    assert "the image adds +0.150 (one run's intervals do not overlap)" in text
    assert "reaches abnormal-only CE-F1 0.340" in text and "(above this arm)" in text
    close = exp.what_to_notice(evaluation(model, {**model, "ce13_micro_f1": 0.21}, "val"))
    assert "intervals overlap" in close and "of its validation reports" in close


def test_the_verdict_names_what_the_word_would_be_without_the_collapsed_runs():
    from medlib import claims as cl

    summary, results, refs = _tables()
    paper = summary.system == res.system_name(res.PAPER_ARM)
    summary.loc[paper, ["runs_collapsed", "collapsed_builds"]] = [4, "1 2"]
    word = cl.word(results)
    _, flat, _ = _tables(effects={k: 0.0 for k in ("image", "beats_random_report", "beats_stage1", "beats_stage2", "prior_helps")})
    text = res.verdict(summary, results, [], refs, word, (res.PAPER_ARM, 0.2), apart=flat)
    assert word == "not reproduced" and cl.word(flat) == "inconclusive"
    assert "**Without the collapsed runs**" in text and "would give *inconclusive*, not *not reproduced*" in text
    same = res.verdict(summary, results, [], refs, word, (res.PAPER_ARM, 0.2), apart=results)
    assert "they give the same word, *not reproduced*" in same
    assert "Without the collapsed runs" not in res.verdict(summary, results, [], refs, word, (res.PAPER_ARM, 0.2))
