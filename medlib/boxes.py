"""Boxes written as text, MiniGPT-Med's way, and read back from model output.

A coordinate is `int(v / image_side * 100)`, so every box lives on a 0..100 grid; a box is
`{<x1><y1><x2><y2>}`; an answer is `<p>pneumonia</p> {<12><30><45><71>}`, and more boxes of
the same phrase follow after `<delim>`. The parser never raises: model output is arbitrary.

What counts as a box (`read_boxes`, the one rule; docs/metrics.md repeats it): four fields in
`{<..><..><..><..>}` (spaces around fields allowed), each an ASCII integer 0..100 without sign
or leading zeros beyond one digit's worth (at most three digits), with x1 <= x2 and y1 <= y2:
exactly what MiniGPT-Med's writer can produce. Anything else in that shape is *malformed*: a
value over 100 or negative, reversed corners, full-width or other non-ASCII digits, decimals,
a number of any length. A malformed box is never repaired (not clipped, not reordered): it is
counted, and the answer is scored on its well-formed boxes only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

GRID = 100
# Anything in the shape of a box: a brace, then fields in angle brackets, with or without the closing brace;
# `read_boxes` then decides whether it is one (four fields, closed, each a coordinate).
_BOX_SHAPE = re.compile(r"\{\s*((?:<[^<>{}]*>\s*)+)(\}?)")
_FIELD = re.compile(r"<([^<>{}]*)>")
_COORD = re.compile(r"(?:100|[1-9]?[0-9])", re.ASCII)
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


def _box(fields) -> tuple[int, int, int, int] | None:
    """Four field strings -> a box on the grid, or None when they break the rule above."""
    vals = []
    for f in fields:
        f = f.strip()
        if not _COORD.fullmatch(f):
            return None
        vals.append(int(f))
    x1, y1, x2, y2 = vals
    return (x1, y1, x2, y2) if x1 <= x2 and y1 <= y2 else None


def read_boxes(text) -> tuple[list[tuple[int, int, int, int]], int]:
    """(the well-formed boxes in `text`, the number of malformed ones): the one rule of what a box is."""
    if not isinstance(text, str):
        return [], 0
    boxes, malformed = [], 0
    for m in _BOX_SHAPE.finditer(text):
        fields = _FIELD.findall(m.group(1))
        box = _box(fields) if len(fields) == 4 and m.group(2) else None  # 3 or 5 numbers, or no closing brace: malformed
        if box is None:
            malformed += 1
        else:
            boxes.append(box)
    return boxes, malformed


def parse_boxes(text) -> list[tuple[int, int, int, int]]:
    """Every well-formed box in `text` (see `read_boxes`); malformed ones are left out."""
    return read_boxes(text)[0]


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


def shift_scale(image, boxes_grid, rng) -> tuple:
    """Geometric box augmentation: move and zoom the image (a square uint8 array) and move its boxes (0-100 grid)
    with it (MiniGPT-Med's crop moved the image but not the box text). Returns (image, boxes)."""
    # imported here: scipy (about 0.2 s) for one image operation; boxes as text need none of it
    from scipy import ndimage

    s = image.shape[0]
    zoom = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-0.08, 0.08, size=2) * s  # (dx, dy) in pixels
    centre = s / 2
    # output pixel p = zoom * (q - centre) + centre + shift for input pixel q
    inv = 1.0 / zoom
    offset = [centre - inv * (centre + shift[1]), centre - inv * (centre + shift[0])]  # (row, col)
    out = ndimage.affine_transform(image.astype(np.float32), [inv, inv], offset=offset, order=1, mode="constant")
    moved = []
    for b in boxes_grid:
        px = np.array(b, float) / 100 * s
        x1, y1, x2, y2 = zoom * (px - centre) + centre + np.array([shift[0], shift[1], shift[0], shift[1]])
        moved.append(to_grid((np.clip(x1, 0, s), np.clip(y1, 0, s), np.clip(x2, 0, s), np.clip(y2, 0, s)), s))
    return out.clip(0, 255).astype(np.uint8), moved
