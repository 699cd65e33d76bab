"""The claims framework: the four words from synthetic parts whose truth is known, the hierarchical interval, the
sign-flip test and Holm's procedure."""

import numpy as np
import pytest

from medlib import claims as cl

STUDIES = np.repeat(np.arange(80), 4)  # 80 studies of 4 items


def paired(effect, builds=(0, 1, 2), seeds=3, noise=0.3, build_shift=(), seed=0):
    """Per-item differences with mean `effect` (plus `build_shift[k]` on build k) on every run."""
    rng = np.random.default_rng(seed)
    units = [(b, s) for b in builds for s in range(seeds)]
    shift = dict(enumerate(build_shift))
    diffs = np.array([effect + shift.get(b, 0.0) + rng.normal(0, noise, len(STUDIES)) for b, _ in units])
    return cl.Paired(diffs, np.array([b for b, _ in units]), STUDIES)


def claim(*keys, check=None):
    parts = tuple(cl.Part(k, f"part {k}", "a", k) for k in keys)
    if check:
        parts = (cl.Part(check, "reads the image", "a", "shuffled", check=True),) + parts
    return cl.Claim("c", "P", "c", parts)


def word_of(effects: dict, check=None, **kw):
    c = claim(*[k for k in effects if k != check], check=check)
    return cl.word(cl.test_parts(c, {k: paired(e, seed=i, **kw) for i, (k, e) in enumerate(effects.items())}, num_resamples=1000))


def test_the_four_words():
    assert word_of({"x": 0.2, "y": 0.2}) == "reproduced"
    assert word_of({"x": 0.2, "y": 0.0}) == "partly"
    assert word_of({"x": 0.0, "y": 0.0}) == "inconclusive"
    assert word_of({"x": 0.2, "y": -0.2}) == "not reproduced"


def test_a_failed_check_caps_the_word_at_partly():
    assert word_of({"img": 0.2, "x": 0.2}, check="img") == "reproduced"
    assert word_of({"img": 0.0, "x": 0.2}, check="img") == "partly"


def test_a_part_holds_only_when_every_build_agrees():
    # pooled clearly above 0, but build 2 goes the other way: the part does not hold
    res = cl.test_parts(claim("x"), {"x": paired(0.2, build_shift=(0.1, 0.1, -0.45))}, num_resamples=1000)[0]
    assert res.by_build[2] < 0 and not res.holds


def test_a_part_is_reversed_only_when_every_build_agrees():
    """The mirror of `holds`: an interval below 0 is a reversal when no build goes the paper's way."""
    def result(by_build):
        return cl.PartResult(cl.Part("x", "part x", "a", "b"), difference=-0.1, lo=-0.2, hi=-0.05, level=0.95, p=0.004,
                             rejected=True, by_build=by_build, runs=9, builds=3)

    assert result((-0.2, -0.15, -0.05)).reversed and result((-0.2, -0.15, -0.05)).state == "reversed"
    assert not result((-0.2, -0.15, 0.05)).reversed and result((-0.2, -0.15, 0.05)).state == "does not separate"
    assert cl.word([result((-0.2, -0.15, 0.05))]) == "inconclusive"


def test_the_build_is_a_unit_so_one_deviant_build_widens_the_interval():
    calm = cl.test_parts(claim("x"), {"x": paired(0.1)}, num_resamples=1000)[0]
    moved = cl.test_parts(claim("x"), {"x": paired(0.1, build_shift=(-0.08, 0.0, 0.08))}, num_resamples=1000)[0]
    assert moved.detectable > 2 * calm.detectable


def test_sign_flip_is_exact_and_two_sided():
    assert cl.sign_flip_p([1.0] * 9) == pytest.approx(2 / 2 ** 9)
    assert cl.sign_flip_p([-1.0] * 9) == pytest.approx(2 / 2 ** 9)
    assert cl.sign_flip_p([1.0, -1.0]) == 1.0


def test_holm_steps_down_and_stops_at_the_first_failure():
    levels, rejected = cl.holm([0.001, 0.04, 0.012])
    assert levels == pytest.approx([0.05 / 3, 0.05 / 1, 0.05 / 2]) and rejected == [True, True, True]
    levels, rejected = cl.holm([0.001, 0.03, 0.04])
    assert rejected == [True, False, False] and levels[2] == levels[1] == pytest.approx(0.025)


def test_paired_differences_are_checked():
    with pytest.raises(ValueError, match="one difference per item"):
        cl.Paired(np.zeros((3, 5)), np.zeros(3), np.arange(4))
    with pytest.raises(ValueError, match="no runs for part"):
        cl.test_parts(claim("x", "y"), {"x": paired(0.1)})


def test_a_count_statistic_is_paired_per_run_and_resampled_by_build_run_and_study():
    """CE-F1 is a statistic of counts summed over reports, not a mean: each run's difference is F1(a) - F1(b)."""
    rng = np.random.default_rng(0)

    def f1(t):  # (..., [tp, fp, fn])
        return 2 * t[..., 0] / np.maximum(2 * t[..., 0] + t[..., 1] + t[..., 2], 1)

    gold = rng.random(len(STUDIES)) < 0.4

    def run(p_hit):  # one run's per-item counts: a hit where it names a gold finding, a false alarm elsewhere
        said = np.where(gold, rng.random(len(STUDIES)) < p_hit, rng.random(len(STUDIES)) < 0.1)
        return np.stack([said & gold, said & ~gold, ~said & gold], -1).astype(float)

    builds = np.repeat([0, 1, 2], 3)
    good, poor = np.stack([run(0.8) for _ in builds]), np.stack([run(0.3) for _ in builds])
    x = cl.PairedCounts(good, poor, builds, STUDIES, f1)
    want = f1(good.sum(1)) - f1(poor.sum(1))
    assert np.allclose(x.run_values(), want)
    mean, draws = cl.hierarchical_bootstrap(x, num_resamples=500)
    assert mean == pytest.approx(np.mean([want[builds == b].mean() for b in range(3)]))
    assert np.quantile(draws, 0.025) > 0
    part = cl.Claim("c", "P", "c", (cl.Part("f1", "better F1", "good", "poor", "f1"),))
    assert cl.word(cl.test_parts(part, {"f1": x}, num_resamples=500)) == "reproduced"
    same = cl.PairedCounts(poor, poor, builds, STUDIES, f1)
    assert cl.word(cl.test_parts(part, {"f1": same}, num_resamples=500)) == "inconclusive"
    with pytest.raises(ValueError, match="same runs and items"):
        cl.PairedCounts(good, poor[:, :10], builds, STUDIES, f1)


def test_the_reason_for_the_word_names_the_parts_that_decided_it():
    results = cl.test_parts(claim("x", "y", check="img"), {"img": paired(0.0, seed=0), "x": paired(0.2, seed=1),
                                                          "y": paired(0.0, seed=2)}, num_resamples=500)
    word = cl.word(results)
    assert word == "partly"
    assert cl.why(word, results) == "1 of 2 parts holds (part x); a check does not hold (reads the image)"
    assert cl.brief(results)[-1] == "holds: part x"
