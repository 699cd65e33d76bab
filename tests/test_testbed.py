"""The shared testbed: the image-shuffled control's derangement, the study-and-seed bootstrap, Holm."""

import numpy as np
import pytest
import torch

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
    from medlib.experiments.priors import question_prior

    train = [{"question": "is there opacity?", "question_type": "presence", "answer": a} for a in ("yes", "yes", "no")]
    train += [{"question": "which view is this image taken?", "question_type": "view", "answer": a} for a in ("PA", "PA", "AP")]
    test = [{"question": "is there opacity?", "question_type": "presence"},
            {"question": "is there nodule?", "question_type": "presence"},  # unseen string: its type's answer
            {"question": "which view is this image taken?", "question_type": "view"}]
    assert question_prior(train, test) == ["yes", "yes", "PA"]


# -- MiniGPT-Med on the testbed: two kinds of finding, a label prior, and the lenient rule in prose ------

def test_grounding_samples_say_whether_anatomy_fixes_the_position():
    from medlib.data import render
    from medlib.data.synthcxr import build, grounding_samples, position_of

    ds = build(image_size=64, limit=120, progress=False)
    samples = [g for s in ds.studies for g in grounding_samples(s, ds.image_size)]
    assert {g["position"] for g in samples} == {"fixed", "variable"}
    for g in samples:
        assert g["position"] == ("fixed" if g["kind"] in render.POSITION_FIXED_KINDS else "variable")
    assert position_of("cardiomegaly") == "fixed" and position_of("opacity") == "variable" and position_of("nodule") == "variable"


def test_the_label_prior_is_the_labels_typical_box_set_with_its_usual_box_count():
    from medlib.boxes import parse_boxes
    from medlib.experiments.priors import label_prior

    both_lungs = [(10, 20, 45, 80), (55, 20, 90, 80)]
    train = [{"task": "detection", "label": "low lung volumes", "boxes": both_lungs}] * 3
    train += [{"task": "detection", "label": "low lung volumes", "boxes": [(10, 20, 45, 80)]}]  # one-box outlier
    # an opacity usually on the right: two right lower boxes, one left upper
    train += [{"task": "detection", "label": "opacity", "boxes": [b]} for b in [(10, 50, 40, 80), (12, 52, 42, 82), (60, 10, 80, 30)]]
    train += [{"task": "refer", "label": "opacity", "boxes": [(0, 0, 100, 100)]}]  # not a [detection] answer: ignored
    test = [{"label": "low lung volumes"}, {"label": "opacity"}, {"label": "never seen"}]
    out = [parse_boxes(t) for t in label_prior(train, test)]
    assert sorted(out[0]) == both_lungs  # as many boxes as the label usually has, not one averaged midline box
    assert out[1] in ([(10, 50, 40, 80)], [(12, 52, 42, 82)])  # the medoid of the right lower boxes
    assert len(out[2]) in (1, 2) and label_prior(train, test) == label_prior(train, test)  # fallback; deterministic


def test_what_to_notice_is_computed_from_the_numbers_it_sits_next_to():
    from medlib.experiments.minigpt_med import what_to_notice

    def m(var, fixed, lo=0.02, lenient=0.5, strict=0.4, kept=90):
        return {"iou_strict_variable": var, "iou_strict_variable_lo": var - lo, "iou_strict_variable_hi": var + lo,
                "iou_strict_fixed": fixed, "iou_strict_fixed_lo": fixed - lo, "iou_strict_fixed_hi": fixed + lo,
                "iou_lenient": lenient, "iou_strict": strict, "lenient_kept": kept, "findings": 100}

    from medlib.experiments.common import Evaluation

    text = what_to_notice(Evaluation("test", m(0.30, 0.80), m(0.10, 0.78), m(0.12, 0.81), {}, None, None, None, []))
    assert "+0.180 against the label prior (0.120; the intervals do not overlap)" in text
    assert "-0.010 against the label prior (0.810; the intervals overlap)" in text
    assert "0.100 above the strict 0.400: it dropped 10 of 100 answers" in text


def test_the_mixture_keeps_at_most_k_questions_a_study_and_the_same_ones_every_time():
    from medlib.experiments.priors import vqa_per_study

    questions = [{"study": s, "question": f"q{i}"} for s, n in (("a", 5), ("b", 1), ("c", 3)) for i in range(n)]
    kept = vqa_per_study(questions, 2)
    assert [q["study"] for q in kept].count("a") == 2 and [q["study"] for q in kept].count("b") == 1
    assert [q["study"] for q in kept].count("c") == 2 and kept == vqa_per_study(questions, 2)
    assert kept == [q for q in questions if q in kept]  # the given order


def _where_samples(n, rng, split):
    """Opacity on the left upper or the right lower quarter at random (4 x 4 patch grid, 0..100 box grid)."""
    quarters = [(0, 0, 50, 50), (50, 50, 100, 100)]
    return [{"task": "detection", "label": "opacity", "position": "variable", "study": f"{split}{i}",
             "image_index": f"{split}{i}", "boxes": [quarters[rng.integers(2)]]} for i in range(n)]


def _where_features(samples, rng, sees: bool):
    from medlib.experiments.probes import _patch_cover

    feats = {}
    for s in samples:
        x = rng.normal(size=(16, 8))
        if sees:  # the patch tokens say which patches hold the finding
            x[:, 0] += 3 * _patch_cover(s["boxes"], 4)
        feats[s["image_index"]] = torch.tensor(x, dtype=torch.float32)
    return feats


@pytest.mark.parametrize("sees", [True, False])
def test_the_where_probe_beats_the_labels_map_only_when_the_features_say_where(sees):
    from medlib.experiments.probes import where_probe

    rng = np.random.default_rng(0)
    train, test = _where_samples(80, rng, "t"), _where_samples(60, rng, "x")
    table = where_probe(_where_features(train + test, rng, sees), train, {"test": test})
    row = table.iloc[0]
    assert row.findings == 60 and row.labels_left_out == 0
    if sees:
        assert row.probe_auc > 0.95 and row.auc_gap_lo > 0.05 and row.iou_gap_lo > 0.2
    else:  # noise features: no better than where the label usually is
        assert row.auc_gap_lo < 0 < row.auc_gap_hi or row.auc_gap_hi < 0
        assert row.iou_gap_lo < 0.1


def test_patch_cover_marks_the_patch_centres_inside_the_boxes():
    from medlib.experiments.probes import _patch_cover

    cover = _patch_cover([(0, 0, 50, 50)], 4).reshape(4, 4)
    assert cover[:2, :2].all() and cover.sum() == 4  # rows are y, columns x
    assert not _patch_cover([(51, 51, 60, 60)], 4).any()  # a box between patch centres covers none
