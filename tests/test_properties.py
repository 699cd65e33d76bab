"""No crash on arbitrary text: the parsers and normalisers face model output and real reports."""

from hypothesis import given, settings
from hypothesis import strategies as st

from medlib.data.iu_xray import clean_report
from medlib.metrics.clinical import label_report
from medlib.metrics.text import normalise_answer


@given(st.text())
@settings(max_examples=200)
def test_report_cleaner_never_crashes_and_is_idempotent_on_its_output(text):
    once = clean_report(text)
    assert clean_report(once) == once


@given(st.one_of(st.text(), st.none(), st.integers()))
def test_answer_normaliser_never_crashes(value):
    assert isinstance(normalise_answer(value), str)


@given(st.text())
@settings(max_examples=200)
def test_labeller_never_crashes(text):
    labels = label_report(text)
    assert set(labels.values()) <= {1, 0, -1, None}
