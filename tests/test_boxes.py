from hypothesis import given
from hypothesis import strategies as st

from medlib.boxes import format_answer, parse_answer, parse_boxes, to_grid

coord = st.integers(0, 100)


def test_minigpt_med_coordinates():
    # int(v / side * 100): a 1024 px RSNA box at (264, 152, 477, 531)
    assert to_grid((264, 152, 477, 531), 1024) == (25, 14, 46, 51)


def test_several_boxes_of_one_phrase_are_joined_by_delim():
    text = format_answer("pneumonia", [(1, 2, 30, 40), (50, 60, 70, 80)])
    assert text == "<p>pneumonia</p> {<1><2><30><40>}<delim>{<50><60><70><80>}"
    (phrase,) = parse_answer(text)
    assert phrase.label == "pneumonia" and phrase.boxes == ((1, 2, 30, 40), (50, 60, 70, 80))


def test_junk_around_boxes_is_tolerated_and_corners_ordered():
    assert parse_boxes("sure! {<40><50><10><20>} and {<1><2>} {<999><0><5><5>}") == [(10, 20, 40, 50), (5, 0, 100, 5)]


@given(st.lists(st.tuples(coord, coord, coord, coord), min_size=1, max_size=4), st.text(alphabet="abc de", min_size=1, max_size=12))
def test_format_then_parse_round_trips(boxes, label):
    ordered = [(min(a, c), min(b, d), max(a, c), max(b, d)) for a, b, c, d in boxes]
    (phrase,) = parse_answer(format_answer(label.strip() or "x", ordered))
    assert list(phrase.boxes) == ordered


@given(st.text())
def test_parser_never_raises_on_arbitrary_text(text):
    parse_answer(text)
    parse_boxes(text)
