"""The shared testbed: the image-shuffled control's derangement, the study-and-seed bootstrap, Holm."""

import numpy as np
import pytest

from medlib.experiments.common import derangement, image_shuffled
from medlib.metrics.bootstrap import holm, paired_study_bootstrap, study_bootstrap


def test_derangement_moves_every_study_and_is_fixed():
    keys = [f"s{i}" for i in range(50)]
    d = derangement(keys, seed=0)
    assert sorted(d.values()) == sorted(keys) and all(d[k] != k for k in keys)
    assert d == derangement(keys, seed=0) and d != derangement(keys, seed=1)
    with pytest.raises(ValueError, match="at least 2 studies"):
        derangement(["only"])


def test_image_shuffled_gives_each_study_another_studys_image_and_keeps_the_questions():
    samples = [{"study": f"s{i // 3}", "image_index": 100 + i // 3, "question": f"q{i}"} for i in range(30)]
    out = image_shuffled(samples)
    assert [s["question"] for s in out] == [s["question"] for s in samples]
    assert all(o["image_index"] != s["image_index"] for o, s in zip(out, samples))
    by_study = {}
    for o in out:
        by_study.setdefault(o["study"], set()).add(o["image_index"])
    assert all(len(v) == 1 for v in by_study.values())  # one other image per study, not per question


def test_study_bootstrap_is_wider_when_a_studys_questions_move_together():
    rng = np.random.default_rng(0)
    studies = np.repeat(np.arange(60), 10)
    independent = rng.random(600)
    clustered = np.repeat(rng.random(60), 10)  # ten copies of one draw per study
    wi = study_bootstrap(independent, studies)
    wc = study_bootstrap(clustered, studies)
    assert wc["hi"] - wc["lo"] > 2 * (wi["hi"] - wi["lo"])
    assert wi["lo"] < independent.mean() < wi["hi"] and wi["studies"] == 60


def test_seed_spread_widens_the_interval():
    rng = np.random.default_rng(1)
    studies = np.repeat(np.arange(100), 4)
    base = rng.random(400)
    same = np.stack([base] * 5)
    spread = base + np.array([-0.1, -0.05, 0, 0.05, 0.1])[:, None]
    a, b = study_bootstrap(same, studies), study_bootstrap(spread, studies)
    assert a["seeds"] == b["seeds"] == 5 and (b["hi"] - b["lo"]) > 1.5 * (a["hi"] - a["lo"])


def test_paired_study_bootstrap_finds_a_small_consistent_gain_and_not_a_null_one():
    rng = np.random.default_rng(2)
    studies = np.repeat(np.arange(80), 5)
    a = rng.random((3, 400))
    better = paired_study_bootstrap(a + 0.02, a, studies)
    assert better["lo"] > 0 and better["p"] < 0.01 and abs(better["diff"] - 0.02) < 1e-9
    null = paired_study_bootstrap(a, a[::-1], studies)
    assert null["lo"] < 0 < null["hi"] and null["p"] > 0.05
    with pytest.raises(ValueError, match="same items"):
        paired_study_bootstrap(a, a[:, :-1], studies)


def test_holm_matches_the_textbook_example():
    # p = (0.01, 0.04, 0.03): sorted 0.01*3, 0.03*2, 0.04*1 -> 0.03, 0.06, then max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_a_best_that_resolves_to_a_listed_value_runs_once():
    from medlib.orchestrate import expand_grid

    arms = expand_grid({"unfreeze_ratio": [0.0, 0.3125, 1.0, 0.3125], "seed": [3, 4]})
    assert len(arms) == 6 and len({tuple(sorted(a.items())) for a in arms}) == 6


def test_the_question_prior_answers_from_the_question_string_only():
    from medlib.experiments.medblip import question_prior

    train = [{"question": "is there opacity?", "question_type": "presence", "answer": a} for a in ("yes", "yes", "no")]
    train += [{"question": "which view is this image taken?", "question_type": "view", "answer": a} for a in ("PA", "PA", "AP")]
    test = [{"question": "is there opacity?", "question_type": "presence"},
            {"question": "is there nodule?", "question_type": "presence"},  # unseen string: its type's answer
            {"question": "which view is this image taken?", "question_type": "view"}]
    assert question_prior(train, test) == ["yes", "yes", "PA"]
