"""The rule labeller on hand-written sentences of the kinds real reports use (tests/data/labeller_sentences.tsv):
uncertainty and negation scoped to their clause, pseudo-negations, post-mention cues, bone findings."""

from pathlib import Path

import pytest

from medlib.metrics.clinical import OBSERVATIONS, label_report

TABLE = Path(__file__).parent / "data" / "labeller_sentences.tsv"


def _cases():
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        sentence, expected = line.split("\t")
        for item in expected.split(";"):
            obs, value = (x.strip() for x in item.split("="))
            assert obs in OBSERVATIONS, obs
            yield pytest.param(sentence, obs, None if value == "None" else int(value), id=f"{sentence[:40]}|{obs}")


CASES = list(_cases())


def test_the_table_holds_at_least_60_sentences():
    assert len({c.values[0] for c in CASES}) >= 60


@pytest.mark.parametrize("sentence,observation,expected", CASES)
def test_label(sentence, observation, expected):
    assert label_report(sentence)[observation] == expected
