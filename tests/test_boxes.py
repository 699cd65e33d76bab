import pytest
from hypothesis import given
from hypothesis import strategies as st

from medlib.boxes import format_answer, parse_answer, parse_boxes, read_boxes, to_grid

coord = st.integers(0, 100)


def test_minigpt_med_coordinates():
    # int(v / side * 100): a 1024 px RSNA box at (264, 152, 477, 531)
    assert to_grid((264, 152, 477, 531), 1024) == (25, 14, 46, 51)


def test_several_boxes_of_one_phrase_are_joined_by_delim():
    text = format_answer("pneumonia", [(1, 2, 30, 40), (50, 60, 70, 80)])
    assert text == "<p>pneumonia</p> {<1><2><30><40>}<delim>{<50><60><70><80>}"
    (phrase,) = parse_answer(text)
    assert phrase.label == "pneumonia" and phrase.boxes == ((1, 2, 30, 40), (50, 60, 70, 80))


def test_junk_around_boxes_is_tolerated_and_malformed_boxes_are_counted_not_repaired():
    assert read_boxes("sure! {<10><20><40><50>} and {<1><2>} { < 5 > <0><5><5> }") == ([(10, 20, 40, 50), (5, 0, 5, 5)], 1)
    assert read_boxes("no box here, {<1><2>} is half of one") == ([], 1)
    assert read_boxes("no box here at all, <1><2><3><4> has no brace") == ([], 0)


@pytest.mark.parametrize("text", ["{<1><2><3>}", "{<1><2><3><4><5>}", "{<1><2><3><4>", "<p>x</p> {<1><2><3><4> and more"])
def test_three_or_five_fields_and_an_unclosed_brace_are_malformed(text):
    assert read_boxes(text) == ([], 1)


@pytest.mark.parametrize("box", [
    "{<40><50><10><20>}",                 # reversed corners
    "{<101><0><5><5>}", "{<-1><0><5><5>}",  # outside the grid
    "{<１２><0><50><50>}",                # full-width digits
    "{<١٢><0><50><50>}",                  # Arabic-Indic digits
    "{<1.5><0><50><50>}", "{<+1><0><50><50>}", "{<007><0><50><50>}", "{<><0><50><50>}",
    "{<" + "9" * 4000 + "><0><50><50>}", "{<" + "9" * 5000 + "><0><50><50>}",  # one rule at any length
])
def test_malformed_boxes_follow_one_rule(box):
    assert read_boxes(f"<p>nodule</p> {box}") == ([], 1)
    assert read_boxes(f"<p>nodule</p> {box}<delim>{{<1><2><3><4>}}") == ([(1, 2, 3, 4)], 1)


@given(st.lists(st.tuples(coord, coord, coord, coord), min_size=1, max_size=4), st.text(alphabet="abc de", min_size=1, max_size=12))
def test_format_then_parse_round_trips(boxes, label):
    ordered = [(min(a, c), min(b, d), max(a, c), max(b, d)) for a, b, c, d in boxes]
    (phrase,) = parse_answer(format_answer(label.strip() or "x", ordered))
    assert list(phrase.boxes) == ordered


@given(st.text())
def test_parser_never_raises_on_arbitrary_text(text):
    parse_answer(text)
    parse_boxes(text)


@pytest.mark.slow  # builds the whole data set
def test_box_text_tokens_training_target_and_parse_round_trip_on_the_tiny_tokenizer():
    """A grounding answer -> the tiny tokenizer's ids -> the supervised part of MiniGPT-Med's training
    target -> decoded text -> parsed boxes: the boxes come back exactly, for every test finding."""
    import torch
    from transformers import LlamaForCausalLM

    from medlib.data.synthcxr import build, grounding_samples
    from medlib.models import minigpt_med as mg
    from medlib.zoo import local_tokenizer

    tok = local_tokenizer()  # the tiny profile's recipe: BPE on SynthCXR-IU's pre-training and training reports
    ds = build(image_size=128, progress=False)
    samples = [g for s in ds.split("test")[:40] for g in grounding_samples(s, ds.image_size) if g["task"] == "detection"]
    torch.manual_seed(0)
    model = mg.MiniGPTMed(mg.vit_tiny(64), LlamaForCausalLM(mg.llama_tiny_config(len(tok), tok.pad_token_id, tok.bos_token_id,
                                                                                 tok.eos_token_id)))
    img = torch.zeros(len(samples), 4, model.llm.config.hidden_size)
    _, _, labels = mg.splice(model, tok, img, [s["instruction"] for s in samples], [s["answer"] for s in samples])
    assert len(samples) > 20
    for s, row in zip(samples, labels):
        target = row[row != -100].tolist()
        assert target[-1] == tok.eos_token_id
        text = tok.decode(target[:-1]).strip()
        assert text == s["answer"] and parse_boxes(text) == [tuple(b) for b in s["boxes"]]


def test_shift_scale_moves_the_boxes_with_the_image():
    """The augmentation moves and zooms the image; each box, moved by the same transform, still frames what it framed."""
    import numpy as np

    from medlib.boxes import shift_scale

    side = 100
    image = np.zeros((side, side), np.uint8)
    image[30:50, 20:60] = 255  # rows y 30-50, columns x 20-60: the box (20, 30, 60, 50) on the 0-100 grid
    for seed in range(5):
        out, (moved,) = shift_scale(image, [(20, 30, 60, 50)], np.random.default_rng(seed))
        ys, xs = np.nonzero(out > 127)
        assert abs(xs.min() - moved[0]) <= 2 and abs(xs.max() + 1 - moved[2]) <= 2
        assert abs(ys.min() - moved[1]) <= 2 and abs(ys.max() + 1 - moved[3]) <= 2
