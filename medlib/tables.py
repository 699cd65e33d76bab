"""What an aggregation writes: tables as CSV and Markdown, and figures as PNG that change only when their numbers do."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from medlib import fileio
from medlib.paths import fingerprint

# Tables are written at six significant digits: their intervals are a few hundredths wide, and bootstrap bounds
# computed on another CPU differ in the 15th digit, which a full-precision table would turn into a changed file.
CSV_FLOAT_FORMAT = "%.6g"


def table_csv(df, index: bool = False) -> str:
    return df.to_csv(index=index, float_format=CSV_FLOAT_FORMAT)


def write_table(out_dir: Path, name: str, frame, title: str) -> None:
    """An aggregation's table: `name.csv` (six significant digits) and `name.md` (its title, then the table)."""
    fileio.write_text(Path(out_dir) / f"{name}.csv", table_csv(frame))
    fileio.write_text(Path(out_dir) / f"{name}.md", f"{title}\n\n" + to_markdown(frame))


def _rounded(obj):
    """`obj` with every number at the tables' six significant digits: what a figure's key is made of."""
    if hasattr(obj, "to_csv"):
        return table_csv(obj)
    if isinstance(obj, dict):
        return {str(k): _rounded(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float):
        return float(CSV_FLOAT_FORMAT % obj)
    return obj


def figure_problems(fig) -> list[str]:
    """What a reader would miss in `fig`: a panel with no title (and no figure title above it), or an axis with tick
    labels but no name, or one named by a column name (`val_auc`) instead of words. Empty when the figure is fine."""
    problems = []
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else ""
    panels = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]  # not images shown bare, colour bars
    # a grid names an axis once, on its outer panels: a panel may leave unnamed what another panel names
    named = {"x": any(ax.get_xlabel().strip() for ax in panels), "y": any(ax.get_ylabel().strip() for ax in panels)}
    for k, ax in enumerate(panels):
        where = f"panel {k + 1}" + (f" ({ax.get_title()!r})" if ax.get_title() else "")
        if not (ax.get_title() or suptitle):
            problems.append(f"{where} has no title")
        for name, axis, label in (("x", ax.xaxis, ax.get_xlabel()), ("y", ax.yaxis, ax.get_ylabel())):
            ticks = [t for t in axis.get_ticklabels() if t.get_visible()] and len(axis.get_ticklocs()) > 0
            if ticks and not label.strip() and not named[name]:
                problems.append(f"{where}: the {name} axis has no name")
            elif re.search(r"\w_\w", re.sub(r"\$[^$]*\$", "", label)):
                problems.append(f"{where}: the {name} axis is named {label!r}, a column name, not words")
    return problems


def check_figure(fig, path) -> None:
    problems = figure_problems(fig)
    if problems:
        raise ValueError(f"figure {Path(path).name}: " + "; ".join(problems))


FIGURE_KEY = "medlib-data"  # the PNG text chunk that holds the key of the numbers a figure was drawn from


def write_figure(fig, path: Path, data, dpi: int = 110) -> bool:
    """Save `fig` as PNG only when the numbers it is drawn from (`data`: its tables, dicts and values, at the tables'
    precision) differ from those of the PNG already there: a figure redrawn from the same numbers on another machine
    would still differ by a pixel. Returns whether it wrote."""

    path = Path(path)
    check_figure(fig, path)
    # the key holds the figure's words as well as its numbers: a renamed axis is a changed figure
    key = fingerprint([_rounded(data), _texts(fig)])
    try:
        with Image.open(path) as old:
            if old.info.get(FIGURE_KEY) == key:
                return False
    except (OSError, ValueError):
        pass
    fileio.write_with(path, lambda p: fig.savefig(p, format="png", dpi=dpi, bbox_inches="tight", metadata={FIGURE_KEY: key}))
    return True


def _texts(fig) -> list[str]:
    """The figure's words a reader sees: titles, axis names, legend entries (not tick labels, set only when drawn)."""
    texts = [fig._suptitle.get_text()] if getattr(fig, "_suptitle", None) else []
    for ax in fig.axes:
        texts += [ax.get_title(loc) for loc in ("left", "center", "right")] + [ax.get_xlabel(), ax.get_ylabel()]
        legend = ax.get_legend()
        texts += [t.get_text() for t in legend.get_texts()] if legend else []
    return texts


def to_markdown(df, index: bool = False, floatfmt: str = ".4f") -> str:
    """A GitHub table without the optional `tabulate` dependency."""
    frame = df.reset_index() if index else df
    cols = [str(c) for c in frame.columns]

    def fmt(v):
        if isinstance(v, float):
            return "" if v != v else format(v, floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"
