"""Every figure medlib writes is titled and its axes are named in words: `tables.figure_problems` says what is
missing, and `write_figure` / `Run.save_figure` refuse a figure that has a problem, before writing anything."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from medlib.tables import figure_problems, write_figure  # noqa: E402


def _line(title="loss", xlabel="optimizer step", ylabel="loss"):
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [3, 2, 1])
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig


def test_a_titled_figure_with_named_axes_passes():
    assert figure_problems(_line()) == []


@pytest.mark.parametrize("kwargs, problem", [
    (dict(title=""), "no title"),
    (dict(xlabel=""), "x axis has no name"),
    (dict(ylabel=""), "y axis has no name"),
    (dict(xlabel="val_auc"), "column name"),
])
def test_each_missing_word_is_named(kwargs, problem):
    problems = figure_problems(_line(**kwargs))
    assert len(problems) == 1 and problem in problems[0]


def test_a_figure_title_covers_untitled_panels_and_a_grid_names_an_axis_once():
    fig, axes = plt.subplots(1, 2, sharey=True)
    for ax in axes:
        ax.plot([0, 1], [0, 1])
        ax.set_xlabel("ratio (%)")
    axes[0].set_ylabel("ROUGE-L")
    fig.suptitle("ablation")
    assert figure_problems(fig) == []


def test_images_without_axes_and_hidden_ticks_need_no_names():
    fig, axes = plt.subplots(1, 2)
    axes[0].imshow(np.zeros((4, 4)))
    axes[0].set_axis_off()
    axes[1].bar(range(3), 1)
    axes[1].set_yticks([])
    axes[1].set(title="layers", xlabel="decoder layer")
    assert figure_problems(fig) == []


def test_math_subscripts_are_words(tmp_path):
    assert figure_problems(_line(ylabel="$x_1$ (px)")) == []


def test_write_figure_refuses_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"figure bad\.png: .*no title"):
        write_figure(_line(title=""), tmp_path / "bad.png", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_a_renamed_axis_is_a_changed_figure(tmp_path):
    path = tmp_path / "f.png"
    assert write_figure(_line(), path, {"a": 1})
    assert not write_figure(_line(), path, {"a": 1})  # same numbers, same words: left as it is
    assert write_figure(_line(xlabel="epoch"), path, {"a": 1})
