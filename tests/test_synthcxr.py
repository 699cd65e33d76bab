import numpy as np
import pytest

from medlib.boxes import parse_answer
from medlib.data.synthcxr import augment_question, build, grounding_samples, vqa_pairs


@pytest.fixture(scope="module")
def ds():
    return build(image_size=64, limit=120, progress=False)


def test_build_is_cached_and_deterministic(ds):
    again = build(image_size=64, limit=120, progress=False)
    assert again.root == ds.root and np.array_equal(again.images, ds.images)


def test_unknown_split_names_the_choices(ds):
    with pytest.raises(ValueError, match="pretrain, train, val, test"):
        ds.split("training")


def test_splits_are_disjoint(ds):
    names = [set(s.uid for s in ds.split(n)) for n in ("pretrain", "train", "val", "test")]
    assert sum(len(n) for n in names) == len(ds.studies) == len(set().union(*names))


def test_vqa_has_the_six_types_and_balanced_presence(ds):
    labels = sorted({lab for s in ds.studies for lab in s.labels})
    rng = np.random.default_rng(0)
    qa = [q for s in ds.studies for q in vqa_pairs(s, labels, rng)]
    types = {q["question_type"] for q in qa}
    assert {"abnormality", "presence", "location", "level", "view"} <= types
    pres = [q["answer"] for q in qa if q["question_type"] == "presence"]
    assert 0.3 < pres.count("yes") / len(pres) < 0.7


def test_augmentation_negates_and_flips():
    (out,) = augment_question({"question_type": "presence", "question": "is there atelectasis?", "answer": "yes"})
    assert out["question"] == "is there no atelectasis?" and out["answer"] == "no"


def test_grounding_answers_parse_back_to_their_boxes(ds):
    for s in ds.studies:
        for g in grounding_samples(s, ds.image_size):
            if g["task"] == "detection":
                (phrase,) = parse_answer(g["answer"])
                assert phrase.label == g["label"] and list(phrase.boxes) == [tuple(b) for b in g["boxes"]]


def test_box_text_survives_the_tiny_tokenizer(ds):
    from medlib.zoo import build_tokenizer

    tok = build_tokenizer(ds.studies[:60])
    text = "<p>pleural effusion</p> {<3><57><41><88>}<delim>{<60><55><97><90>}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    (phrase,) = parse_answer(tok.decode(ids))
    assert phrase.boxes == ((3, 57, 41, 88), (60, 55, 97, 90))


def test_patch_targets_mark_the_patches_a_box_covers_in_raster_order():
    from medlib.zoo import patch_targets

    drawn = [[{"kind": "nodule", "boxes": [[60.2, 40.1, 63.8, 43.7]]},      # inside patch (row 2, col 3)
              {"kind": "effusion", "boxes": [[16.0, 96.0, 48.0, 112.5]]}],  # cols 1-2, rows 6-7
             []]
    t = patch_targets(drawn, ["effusion", "nodule"], 128, 16)
    assert t.shape == (2, 64, 2) and t[1].sum() == 0
    assert t[0, :, 1].nonzero().flatten().tolist() == [2 * 8 + 3]
    assert t[0, :, 0].nonzero().flatten().tolist() == [6 * 8 + 1, 6 * 8 + 2, 7 * 8 + 1, 7 * 8 + 2]


def test_testbed_presence_is_balanced_per_finding_and_no_question_gives_its_answer_away(ds):
    from medlib.data import render
    from medlib.data.synthcxr import testbed_vqa

    studies = ds.split("train")
    qa = testbed_vqa(studies, seed=0)
    assert qa == testbed_vqa(studies, seed=0)  # one seeded generator: the same questions every time
    presence = [q for q in qa if q["question_type"] == "presence"]
    for lab in {q["question"] for q in presence}:
        answers = [q["answer"] for q in presence if q["question"] == lab]
        positives = sum(lab == f"is there {x}?" for s in studies for x in s.labels)
        assert answers.count("yes") == positives  # every study showing it is asked
        assert answers.count("no") == min(positives, len(studies) - positives)
    assert "type" not in {q["question_type"] for q in qa}
    kind_of = {(s.uid, d["label"]): d["kind"] for s in studies for d in s.drawn}
    for q in qa:
        if q["question_type"] == "location":
            label = q["question"][len("where is the "):-len(" located?")]
            assert kind_of[(q["study"], label)] not in render.POSITION_FIXED_KINDS


@pytest.mark.parametrize("table_name, command", [("question", "question-table"), ("grounding", "grounding-table")])
def test_the_data_card_tables_are_what_the_generator_makes(table_name, command):
    """docs and data agree: the VQA question table and the grounding table (the two kinds of finding the
    grounding results are reported in) in data_cards/synthcxr_iu.md are what today's build gives."""
    import pandas as pd

    from medlib.data import synthcxr
    from medlib.paths import REPO_ROOT
    from medlib.tables import to_markdown

    card = (REPO_ROOT / "data_cards" / "synthcxr_iu.md").read_text()
    start, end = f"<!-- {table_name}-statistics: begin -->\n", f"<!-- {table_name}-statistics: end -->"
    assert start in card and end in card, f"the data card lost its {table_name}-statistics markers"
    table = card[card.index(start) + len(start):card.index(end)]
    statistics = getattr(synthcxr, f"{table_name}_statistics")
    expected = to_markdown(pd.DataFrame(statistics(build(image_size=128, progress=False))), floatfmt=".3f")
    assert table.strip() == expected.strip(), f"regenerate the table: medlib data {command}"


def test_a_rerender_is_grounded_where_it_draws_its_findings_which_moves_position_variable_ones(ds):
    from medlib.data.synthcxr import grounding_samples_of
    from medlib.zoo import render_variants

    studies = [s for s in ds.studies if s.drawn][:30]
    _, _, _, drawn = render_variants(studies, ds.image_size, 1)
    moved = 0
    for s, d in zip(studies, drawn):
        again = grounding_samples_of(d, s.uid, ds.image_size)
        assert [g["label"] for g in again] == [g["label"] for g in grounding_samples_of(s.drawn, s.uid, ds.image_size)]
        for g, new in zip(grounding_samples(s, ds.image_size), again):
            if g["task"] == "detection":
                (phrase,) = parse_answer(new["answer"])
                assert list(phrase.boxes) == [tuple(b) for b in new["boxes"]] and new["study"] == s.uid
                moved += g["position"] == "variable" and new["boxes"] != g["boxes"]
    assert moved > 0  # what the grounding stage learns from: the same finding drawn elsewhere
