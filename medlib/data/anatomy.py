"""The canvas a radiograph is drawn on and its normal anatomy: the lung fields, the diaphragm's domes, the
clavicles, and a named box for each normal structure (`anatomy_boxes`), which `render` draws and moves with the
image. Coordinates as in `render`: normalised to [0, 1], x to the image's right (the patient's left), y down."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


class Canvas:
    """The image in attenuation units plus its anatomy, so findings can be placed in it."""

    def __init__(self, size: int, rng: np.random.Generator, view: str, lung_shapes: np.ndarray):
        self.size, self.rng, self.view = size, rng, view
        self.outline = lung_shapes[rng.integers(len(lung_shapes))]  # one real pair of lungs per study
        self._lungs: dict = {}
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        self.x, self.y = (xs + 0.5) / size, (ys + 0.5) / size
        self.img = np.zeros((size, size), np.float32)
        self.cardiac_scale = 1.0
        self.diaphragm = 0.74 + rng.normal(0, 0.015)  # height of the domes
        self.lung_scale = 1.0

    def ellipse(self, cx, cy, rx, ry, soft=0.02):
        d = np.sqrt(((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2)
        return np.clip((1 - d) / max(soft, 1e-3) * min(rx, ry) * 4, 0, 1)

    def lung(self, side: str) -> np.ndarray:
        """The lung field: a real lung outline stretched into this study's lung box, whose lateral
        edge follows `lung_scale` and whose base follows the diaphragm (hyper-/hypoinflation)."""
        key = (side, self.diaphragm, self.lung_scale)
        if key not in self._lungs:
            cx = 0.30 if side == "right" else 0.70
            rx = (0.155 if side == "right" else 0.145) * self.lung_scale
            x0, x1 = (cx - rx, 0.44) if side == "right" else (0.56, cx + rx)
            top, bottom = 0.14, self.diaphragm + (0.015 if side == "left" else 0.0)
            t = self.outline[0 if side == "right" else 1]
            rows = (self.y - top) / (bottom - top) * t.shape[0] - 0.5
            cols = (self.x - x0) / (x1 - x0) * t.shape[1] - 0.5
            self._lungs[key] = ndimage.map_coordinates(t, [rows, cols], order=1, cval=0.0).astype(np.float32)
        return self._lungs[key]

    def lung_box(self, side: str, zone: str = "whole") -> list[float]:
        m = self.lung(side) > 0.5
        ys, xs = np.nonzero(m)
        if ys.size == 0:
            return [0.0, 0.0, float(self.size), float(self.size)]
        y1, y2 = ys.min(), ys.max() + 1
        if zone != "whole":
            k = {"upper": 0, "middle": 1, "lower": 2}[zone]
            h = (y2 - y1) / 3
            y1, y2 = y1 + k * h, y1 + (k + 1) * h
            sel = (ys >= y1) & (ys < y2)
            xs = xs[sel] if sel.any() else xs
        return [float(xs.min()), float(y1), float(xs.max() + 1), float(y2)]


def box_of(mask: np.ndarray, thr: float = 0.25) -> list[float] | None:
    ys, xs = np.nonzero(mask > thr)
    if ys.size == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def dome(c: Canvas) -> np.ndarray:
    """The height of the diaphragm's domes at each column."""
    return c.diaphragm + 0.02 - 0.05 * np.cos((c.x - 0.5) * 2.2)


def clavicle(c: Canvas, side: str) -> tuple[np.ndarray, np.ndarray]:
    """One clavicle's centre line (height at each column) and the columns it spans; higher on AP views."""
    sx = 1 if side == "left" else -1
    t = np.clip((c.x - 0.5) * sx / 0.3, 0, 1)
    clav = (0.12 if c.view == "AP" else 0.15) + 0.03 * t - 0.02 * np.sin(t * np.pi)
    return clav, ((c.x - 0.5) * sx > 0.04) & ((c.x - 0.5) * sx < 0.33)


# The normal anatomy the renderer draws, named as a reader would: what a general grounding stage may learn to box
# without any finding label (`zoo.minigpt_med`). Left and right are the patient's (left on the image's right).
ANATOMY = ("heart", "right lung", "left lung", "right hemidiaphragm", "left hemidiaphragm", "right clavicle",
           "left clavicle", "spine", "mediastinum")


def anatomy_boxes(c: Canvas, heart: np.ndarray) -> dict[str, list[float]]:
    """A pixel box for each of `ANATOMY` the image holds, from the same shapes `render._draw_anatomy` drew (no
    random numbers drawn)."""
    boxes = {"heart": box_of(heart, 0.5), "right lung": c.lung_box("right"), "left lung": c.lung_box("left")}
    domes = dome(c)
    for side in ("right", "left"):
        x1, _, x2, _ = boxes[f"{side} lung"]
        under = (np.abs(c.y - domes) < 0.015) & (c.x * c.size >= x1) & (c.x * c.size <= x2)
        boxes[f"{side} hemidiaphragm"] = box_of(under.astype(np.float32))
        clav, span = clavicle(c, side)
        boxes[f"{side} clavicle"] = box_of(((np.abs(c.y - clav) < 0.015) & span).astype(np.float32))
    body = c.ellipse(0.5, 0.55, 0.47, 0.62, soft=0.04) > 0.5
    boxes["spine"] = box_of(((np.abs(c.x - 0.5) < 0.028) & body).astype(np.float32))
    boxes["mediastinum"] = box_of(((np.abs(c.x - 0.5) < 0.07) & (c.y < c.diaphragm + 0.05) & body).astype(np.float32))
    return {name: boxes[name] for name in ANATOMY if boxes[name] is not None}
