import shutil

import numpy as np
import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score import rouge_scorer

from medlib.metrics.bootstrap import bootstrap_ci, paired_bootstrap
from medlib.metrics.text import closed_accuracy, medblip_scores, normalise_answer


def test_medblip_scores_match_the_reference_libraries():
    preds, refs = ["left lower lung", "yes", ""], ["left lower lungs", "no", "cardiomegaly"]
    s = medblip_scores(preds, refs)
    ref = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert s["rougeL"][0] == pytest.approx(ref.score(refs[0], preds[0])["rougeL"].fmeasure)
    assert s["rougeL"][0] == pytest.approx(1.0)  # the stemmer makes lungs == lung
    assert s["bleu1"][1] == pytest.approx(sentence_bleu([["no"]], ["yes"], weights=(1,), smoothing_function=SmoothingFunction().method1))
    assert s["rougeL"][2] == 0.0 and s["bleu4"][2] == 0.0


def test_lists_of_different_length_get_a_clear_error():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        medblip_scores(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="sample 0"):
        medblip_scores([None], ["a"])


def test_closed_accuracy_counts_only_yes_no():
    out = closed_accuracy(["Yes.", "no", "left lung"], ["yes", "yes", "left lung"], ["presence", "presence", "location"])
    assert out["closed_accuracy"] == 0.5 and out["exact_match"] == pytest.approx(2 / 3)
    assert out["exact_match_location"] == 1.0
    assert normalise_answer("The Left lung!") == "left lung"


def test_bootstrap_interval_contains_the_mean_and_paired_difference():
    ci = bootstrap_ci([0, 1] * 50)
    assert ci["lo"] < 0.5 < ci["hi"] and ci["mean"] == 0.5
    d = paired_bootstrap([1.0] * 30, [0.0] * 30)
    assert d["diff"] == 1.0 and d["lo"] == 1.0 and d["p_not_better"] == 0.0
    with pytest.raises(ValueError, match="same samples"):
        paired_bootstrap([1, 2], [1])


def test_coco_protocol_reports_corpus_and_per_sample_scores():
    from medlib.metrics.text import coco_scores, java_available

    out = coco_scores(["the heart is normal .", ""], ["the heart is normal .", "mild cardiomegaly ."])
    # corpus BLEU-1: 5 of the 6 hypothesis tokens match (the empty report is one token that matches nothing), and the
    # brevity penalty is exp(1 - 8 / 6)
    assert out["bleu1"] == pytest.approx(5 / 6 * np.exp(1 - 8 / 6), abs=1e-3) and len(out["per_sample"]["cider"]) == 2
    assert out["per_sample"]["rougeL"][0] == pytest.approx(1.0)
    if java_available():
        assert 0 < out["meteor"] <= 1
    else:
        assert out["meteor"] is None and "Java" in out["meteor_unavailable"]


def test_nltk_meteor_runs_on_an_offline_wordnet_or_says_why_not():
    from medlib.metrics.text import nltk_meteor
    from medlib.metrics.wordnet import wordnet

    out = nltk_meteor(["the heart is large .", "no effusion ."], ["the heart is big .", "small effusion ."])
    wn = wordnet()
    if wn is None:
        assert out["meteor_nltk"] is None and "wordnet-base" in out["meteor_nltk_unavailable"]
    else:
        assert any("little" in [lem.name() for lem in s.lemmas()] for s in wn.synsets("small"))
        assert len(out["per_sample"]["meteor_nltk"]) == 2 and 0 < out["meteor_nltk"] < 1


def test_bert_sim_records_its_model_and_ranks_paraphrases_higher():
    from medlib.metrics.text import bert_sim

    close = bert_sim(["the heart is enlarged"], ["cardiomegaly, the heart is big"])
    far = bert_sim(["the heart is enlarged"], ["the patient has a broken rib"])
    assert "all-MiniLM-L6-v2" in close["model"] and close["bert_sim"] > far["bert_sim"]


def test_corpus_bleu_interval_brackets_the_corpus_value_and_shrinks_to_it_for_identical_reports():
    from medlib.metrics.text import coco_bleu_interval, coco_scores

    preds = ["the heart is normal . the lungs are clear .", "mild cardiomegaly . no effusion .", "no acute disease ."] * 20
    refs = ["the heart is normal in size . the lungs are clear .", "cardiomegaly . small effusion .", "no acute cardiopulmonary disease ."] * 20
    ci, corpus = coco_bleu_interval(preds, refs, num_resamples=200), coco_scores(preds, refs)
    for n in range(1, 5):
        assert ci[f"bleu{n}_lo"] <= corpus[f"bleu{n}"] <= ci[f"bleu{n}_hi"]
    same = coco_bleu_interval(refs, refs, num_resamples=50)
    assert same["bleu4_lo"] == pytest.approx(1.0) and same["bleu4_hi"] == pytest.approx(1.0)


_HOSTILE = ["no effusion.\nmild cardiomegaly.", "a ||| b |||", "|||", "\r\n\t", "", "x" * 5000, "ümlaut ✓ 中文", "line\n\n\nbreaks"]


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's METEOR needs Java")
def test_no_text_can_hang_or_break_the_meteor_subprocess():
    """Newlines and METEOR's `|||` separator used to desynchronise METEOR 1.5 and then hang the process
    for ever (its lock stayed taken). Every text is normalised first; a child process with a time limit
    shows it now returns, with the same scores as the normalised texts give."""
    import subprocess
    import sys

    code = ("import json, sys; from medlib.metrics.text import coco_scores, normalise_text\n"
            f"h = {_HOSTILE!r}\n"
            "a = coco_scores(h, list(reversed(h)))\n"
            "b = coco_scores([normalise_text(t) for t in h], [normalise_text(t) for t in reversed(h)])\n"
            "assert a['meteor'] == b['meteor'] and a['per_sample'] == b['per_sample'], (a, b)\n"
            "print(json.dumps(a['meteor']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 0.0 <= float(done.stdout.strip()) <= 1.0


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's METEOR needs Java")
def test_a_failing_meteor_subprocess_is_closed_and_the_process_exits():
    import subprocess
    import sys

    code = ("from pycocoevalcap.meteor.meteor import Meteor\n"
            "from medlib.metrics.text import coco_scores\n"
            "def broken(self, hyp, refs): raise ValueError('simulated METEOR failure')\n"
            "Meteor._stat = broken\n"
            "try:\n    coco_scores(['a b'], ['a c'])\nexcept RuntimeError as err:\n    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "METEOR 1.5 subprocess failed (ValueError: simulated METEOR failure)" in done.stdout


def test_scorers_see_normalised_text():
    from medlib.metrics.text import medblip_scores, normalise_text

    assert normalise_text(" no  effusion.\n|||mild\tcardiomegaly ") == "no effusion. mild cardiomegaly"
    a = medblip_scores(["no effusion.\nmild ||| cardiomegaly"], ["no effusion. mild cardiomegaly"])
    assert a["rougeL"] == [1.0] and a["bleu4"][0] == pytest.approx(1.0)
