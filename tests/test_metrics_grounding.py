import pytest
import torch
from torchvision.ops import box_iou

from medlib.boxes import format_answer
from medlib.metrics.grounding import grounding_scores, iou_matrix, rsna_precision, strict_iou


def test_iou_matches_torchvision():
    a = [(0, 0, 10, 10), (5, 5, 20, 30)]
    b = [(5, 0, 15, 10), (0, 0, 10, 10), (50, 50, 60, 60)]
    ours = iou_matrix(a, b)
    ref = box_iou(torch.tensor(a, dtype=torch.float), torch.tensor(b, dtype=torch.float)).numpy()
    assert ours == pytest.approx(ref)


def test_hand_worked_matching():
    # one perfect box, one box that half-overlaps its reference (IoU 1/3), one extra prediction
    pred = [(0, 0, 10, 10), (20, 0, 30, 10), (80, 80, 90, 90)]
    gold = [(0, 0, 10, 10), (25, 0, 35, 10)]
    assert strict_iou(pred, gold) == pytest.approx((1 + 1 / 3) / 3)
    # thresholds 0.4..0.75: the perfect match is a TP at all, the 1/3 match at none -> TP=1, FP=2, FN=1
    assert rsna_precision(pred, gold) == pytest.approx(1 / 4)


def test_ground_truth_text_scores_1_and_garbage_scores_0_under_strict():
    gold = [[(10, 20, 40, 60)], [(50, 50, 70, 90), (5, 5, 25, 25)]]
    perfect = [format_answer("pneumonia", g) for g in gold]
    s = grounding_scores(perfect, gold)
    assert s["iou_strict"] == 1.0 and s["acc_at_05"] == 1.0 and s["rsna_map"] == 1.0
    junk = grounding_scores(["no idea", "<p>pneumonia</p> {<1><2>}"], gold)
    assert junk["iou_strict"] == 0.0 and junk["parsable_share"] == 0.0
    assert junk["lenient_kept"] == 0  # the paper's lenient mean would silently drop both


def test_lenient_drops_unparsable_answers_and_strict_does_not():
    gold = [[(10, 10, 50, 50)], [(10, 10, 50, 50)]]
    s = grounding_scores(["{<10><10><50><50>}", "I cannot tell"], gold)
    assert s["iou_lenient"] == 1.0 and s["iou_strict"] == 0.5


def test_nan_box_gets_a_clear_error():
    with pytest.raises(ValueError, match="4 finite numbers"):
        iou_matrix([(0, 0, float("nan"), 1)], [(0, 0, 1, 1)])


def test_one_rule_for_reversed_reference_corners_and_empty_references():
    from medlib.metrics.grounding import strict_iou

    perfect = grounding_scores(["<p>x</p> {<10><20><40><50>}"], [[(40, 50, 10, 20)]])
    assert perfect["iou_strict"] == 1.0 and perfect["acc_at_05"] == 1.0
    assert strict_iou([(10, 20, 40, 50)], [(40, 50, 10, 20)]) == 1.0
    # nothing to find: no box is right (1) in both functions, any box wrong (0)
    assert strict_iou([], []) == 1.0 and grounding_scores(["no finding"], [[]])["iou_strict"] == 1.0
    assert grounding_scores(["<p>x</p> {<1><2><3><4>}"], [[]])["iou_strict"] == 0.0


def test_malformed_answers_are_counted_apart():
    s = grounding_scores(["<p>x</p> {<10><20><40><50>}", "<p>x</p> {<40><50><10><20>}", "the image is normal"],
                         [[(10, 20, 40, 50)]] * 3)
    assert s["malformed_share"] == pytest.approx(1 / 3) and s["per_sample"]["malformed"] == [0.0, 1.0, 0.0]
    assert s["per_sample"]["iou_strict"] == [1.0, 0.0, 0.0] and s["parsable_share"] == pytest.approx(1 / 3)


def test_lenient_scores_multi_box_answers_box_by_box_as_minigpt_med_does():
    # two predicted boxes against one reference: strict matches one-to-one and charges the extra box
    # (1 / 2); lenient keeps the answer and averages each box's best IoU: (1 + 0) / 2 ... here the second
    # box half-overlaps the reference: IoU of (10,10,50,50) with (30,10,70,50) is 800 / 2400 = 1/3.
    gold = [[(10, 10, 50, 50)], [(10, 10, 50, 50), (60, 60, 90, 90)]]
    outputs = ["<p>x</p> {<10><10><50><50>}<delim>{<30><10><70><50>}",  # two boxes, one reference
               "<p>x</p> {<10><10><50><50>}"]  # one box, two references: lenient does not charge the missing one
    s = grounding_scores(outputs, gold)
    assert s["per_sample"]["iou_lenient"] == pytest.approx([(1 + 1 / 3) / 2, 1.0])
    assert s["per_sample"]["iou_strict"] == pytest.approx([1 / 2, 1 / 2])
    assert s["lenient_kept"] == 2 and s["iou_lenient"] == pytest.approx(((1 + 1 / 3) / 2 + 1) / 2)
    # RSNA skips an image with neither predicted nor reference boxes: NaN per sample, left out of the mean
    empty = grounding_scores(["nothing", "<p>x</p> {<10><10><50><50>}"], [[], [(10, 10, 50, 50)]])
    assert empty["per_sample"]["rsna_precision"][0] != empty["per_sample"]["rsna_precision"][0]
    assert empty["rsna_map"] == 1.0
