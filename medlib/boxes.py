"""Boxes written as text, MiniGPT-Med's way, and read back from model output.

A coordinate is `int(v / image_side * 100)`, so every box lives on a 0..100 grid; a box is
`{<x1><y1><x2><y2>}`; an answer is `<p>pneumonia</p> {<12><30><45><71>}`, and more boxes of
the same phrase follow after `<delim>`. The parser never raises: model output is arbitrary.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

GRID = 100
_BOX = re.compile(r"\{\s*<\s*(-?\d+)\s*>\s*<\s*(-?\d+)\s*>\s*<\s*(-?\d+)\s*>\s*<\s*(-?\d+)\s*>\s*\}")
_PHRASE = re.compile(r"<p>(.*?)</p>", re.S)


@dataclass(frozen=True)
class GroundedPhrase:
    label: str
    boxes: tuple[tuple[int, int, int, int], ...]  # on the 0..100 grid


def to_grid(box_px, image_side: float) -> tuple[int, int, int, int]:
    """Pixel box (x1, y1, x2, y2) -> 0..100 grid, as MiniGPT-Med: int(v / side * 100), clipped."""
    if image_side <= 0:
        raise ValueError(f"image_side must be positive, got {image_side}")
    vals = []
    for v in box_px:
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"box {tuple(box_px)} has a non-finite coordinate")
        vals.append(min(GRID, max(0, int(v / image_side * GRID))))
    return tuple(vals)  # type: ignore[return-value]


def from_grid(box_grid, image_side: float) -> tuple[float, float, float, float]:
    return tuple(float(v) / GRID * image_side for v in box_grid)  # type: ignore[return-value]


def format_box(box_grid) -> str:
    x1, y1, x2, y2 = (int(v) for v in box_grid)
    return f"{{<{x1}><{y1}><{x2}><{y2}>}}"


def format_answer(label: str, boxes_grid) -> str:
    """`<p>label</p> {<..><..><..><..>}<delim>{...}` for one phrase and its boxes."""
    return f"<p>{label}</p> " + "<delim>".join(format_box(b) for b in boxes_grid)


def _norm(box) -> tuple[int, int, int, int] | None:
    x1, y1, x2, y2 = (min(GRID, max(0, v)) for v in box)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    return (x1, y1, x2, y2)


def parse_boxes(text) -> list[tuple[int, int, int, int]]:
    """Every well-formed box in `text`, clipped to the grid with corners ordered."""
    if not isinstance(text, str):
        return []
    out = []
    for m in _BOX.finditer(text):
        try:
            out.append(_norm(tuple(int(g) for g in m.groups())))
        except ValueError:  # absurdly long digit strings
            continue
    return out


def parse_answer(text) -> list[GroundedPhrase]:
    """Phrases with their boxes. Boxes before any `<p>` go to the label ""; junk is ignored."""
    if not isinstance(text, str):
        return []
    phrases: list[GroundedPhrase] = []
    marks = list(_PHRASE.finditer(text))
    head = text[: marks[0].start()] if marks else text
    if parse_boxes(head):
        phrases.append(GroundedPhrase("", tuple(parse_boxes(head))))
    for i, m in enumerate(marks):
        tail = text[m.end(): marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        phrases.append(GroundedPhrase(m.group(1).strip(), tuple(parse_boxes(tail))))
    return phrases
