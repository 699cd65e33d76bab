"""Draw a frontal chest radiograph from a report's MeSH tags, with a box for every finding drawn.

Coordinates are normalised to [0, 1] (x to the image's right = the patient's left, y down).
The image is composed in "attenuation" units (air 0, soft tissue ~0.55, bone ~0.85): body,
lungs (real lung outlines, see `Canvas.lung`), mediastinum, spine, heart, diaphragm, ribs and clavicles; then each tagged finding at
its tagged side, zone and severity; then acquisition variation (blur, exposure, noise, a small
rotation and scale, which the boxes follow). Opacities take their size and position from the
real RSNA Pneumonia boxes. Deterministic for (study id, seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medlib.data.anatomy import Canvas, anatomy_boxes, box_of, clavicle, dome
from medlib.data.iu_xray import Tag

RENDERER_VERSION = "3"  # 3: nodules and granulomas drawn large enough for a 16 px patch
LUNG_TEMPLATE = (48, 32)  # rows, cols of one lung outline template

# MeSH finding term (lower case) -> what is drawn. Terms not here are not drawn; the
# dataset counts them as `undrawn` (they stay in the report text).
KIND_OF_TERM = {
    "opacity": "opacity", "airspace disease": "opacity", "pneumonia": "opacity", "consolidation": "opacity",
    "infiltrate": "opacity", "density": "opacity",
    "pulmonary edema": "edema", "pulmonary congestion": "edema",
    "nodule": "nodule", "mass": "mass", "granuloma": "nodule", "calcified granuloma": "nodule",
    "granulomatous disease": "nodule",
    "cardiomegaly": "cardiomegaly",
    "pleural effusion": "effusion",
    "pulmonary atelectasis": "atelectasis", "atelectases": "atelectasis",
    "pneumothorax": "pneumothorax",
    "emphysema": "hyperinflation", "pulmonary emphysema": "hyperinflation",
    "pulmonary disease, chronic obstructive": "hyperinflation", "lung, hyperlucent": "hyperinflation",
    "catheters, indwelling": "line", "tube, inserted": "line",
    "surgical instruments": "wires", "sutures": "wires",
    "implanted medical device": "pacemaker", "medical device": "pacemaker", "stents": "pacemaker",
}
# Lung/hyperdistention and Lung/hypoinflation carry their meaning in the second part.
LUNG_ATTRIBUTE_KIND = {"hyperdistention": "hyperinflation", "hypoinflation": "hypoinflation"}
LABEL_OF_KIND = {"hyperinflation": "hyperinflation", "hypoinflation": "low lung volumes", "line": "catheter",
                 "wires": "sternotomy wires", "pacemaker": "medical device", "edema": "pulmonary edema"}
# Kinds whose box anatomy fixes (the heart, both lungs, the midline devices): where they are is known
# from the label alone, so a question or a box about them does not show that a model read the image.
POSITION_FIXED_KINDS = ("cardiomegaly", "hyperinflation", "hypoinflation", "line", "wires", "pacemaker")
# Kinds drawn larger, denser or deeper with their level; the others are drawn the same at every level.
LEVEL_DRAWN_KINDS = ("opacity", "edema", "nodule", "mass", "effusion", "atelectasis", "pneumothorax", "cardiomegaly")
SEVERITY_LEVEL = {"minimal": 1, "tiny": 1, "small": 1, "mild": 1, "borderline": 1, "moderate": 2,
                  "large": 3, "severe": 3, "extensive": 3, "huge": 3}


@dataclass
class DrawnFinding:
    label: str                      # what a report calls it, e.g. "atelectasis"
    kind: str                       # how it was drawn
    side: str                       # "left" | "right" | "bilateral" | "central"
    zone: str                       # "upper" | "middle" | "lower" | "whole"
    level: int                      # 1 mild/small .. 3 severe/large
    boxes: list[list[float]] = field(default_factory=list)  # pixels x1, y1, x2, y2
    tag: str = ""

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def kind_of(tag: Tag) -> str | None:
    term = tag.finding.lower()
    if term == "lung":
        return next((LUNG_ATTRIBUTE_KIND[a] for a in tag.attributes if a in LUNG_ATTRIBUTE_KIND), None)
    return KIND_OF_TERM.get(term)


def label_of(tag: Tag, kind: str) -> str:
    if kind in LABEL_OF_KIND:
        return LABEL_OF_KIND[kind]
    term = tag.finding.lower()
    return {"pulmonary atelectasis": "atelectasis", "calcified granuloma": "calcified granuloma"}.get(term, term)


def _side(tag: Tag, rng) -> str:
    loc = set(tag.location)
    if "bilateral" in loc or ("left" in loc and "right" in loc):
        return "bilateral"
    if "left" in loc or "lingula" in loc:
        return "left"
    if "right" in loc:
        return "right"
    return str(rng.choice(["left", "right"]))


def _zone(tag: Tag, rng) -> str:
    loc = set(tag.location)
    if loc & {"upper lobe", "apex", "apices", "upper"}:
        return "upper"
    if loc & {"middle lobe", "lingula", "hilum", "hilar", "perihilar", "mid"}:
        return "middle"
    if loc & {"base", "bases", "lower lobe", "costophrenic angle", "cardiophrenic angle", "retrocardiac", "lower"}:
        return "lower"
    return str(rng.choice(["upper", "middle", "lower"], p=[0.25, 0.3, 0.45]))


def _texture(c: Canvas, sigma: float) -> np.ndarray:
    t = ndimage.gaussian_filter(c.rng.standard_normal(c.img.shape).astype(np.float32), sigma * c.size)
    return (t - t.min()) / (np.ptp(t) + 1e-6)


def _sample_rsna(rsna_boxes: np.ndarray, side: str, zone: str, rng) -> np.ndarray:
    """A real RSNA box (normalised x1, y1, x2, y2) on the asked side (and zone if any matches)."""
    cx = (rsna_boxes[:, 0] + rsna_boxes[:, 2]) / 2
    cy = (rsna_boxes[:, 1] + rsna_boxes[:, 3]) / 2
    pick = (cx < 0.5) if side == "right" else (cx >= 0.5)
    zone_sel = {"upper": cy < 0.35, "middle": (cy >= 0.35) & (cy < 0.5), "lower": cy >= 0.5}.get(zone)
    if zone_sel is not None and (pick & zone_sel).any():
        pick = pick & zone_sel
    idx = np.flatnonzero(pick)
    return rsna_boxes[rng.choice(idx)]


def render_study(tags: list[Tag], size: int, seed: int, study_key: int, rsna_boxes: np.ndarray,
                 lung_shapes: np.ndarray, view: str = "PA") -> tuple[np.ndarray, list[DrawnFinding], list[str]]:
    """Returns (uint8 image (size, size), drawn findings with pixel boxes, tags not drawn).
    `rsna_boxes` and `lung_shapes` are the real data of `synthcxr.rsna_boxes` / `synthcxr.lung_shapes`."""
    img, drawn, undrawn, _ = render_with_anatomy(tags, size, seed, study_key, rsna_boxes, lung_shapes, view)
    return img, drawn, undrawn


def render_with_anatomy(tags: list[Tag], size: int, seed: int, study_key: int, rsna_boxes: np.ndarray,
                        lung_shapes: np.ndarray, view: str = "PA"):
    """`render_study` and, fourth, the normal anatomy drawn (`ANATOMY`) as `DrawnFinding`s of kind "anatomy",
    their boxes moved with the image. The same image and findings: the anatomy boxes draw no random numbers."""
    rng = np.random.default_rng([seed, study_key])
    c = Canvas(size, rng, view, lung_shapes)
    plan, undrawn = [], []
    for tag in tags:
        if tag.finding.lower() == "normal":
            continue
        kind = kind_of(tag)
        if kind is None:
            undrawn.append(tag.raw)
            continue
        level = SEVERITY_LEVEL.get(tag.severity or "", int(rng.integers(1, 3)))
        plan.append((tag, kind, level))
    kinds = {k for _, k, _ in plan}
    # Global anatomy changes first: they move everything drawn after them.
    if "hyperinflation" in kinds:
        c.diaphragm += 0.06
        c.lung_scale = 1.08
    if "hypoinflation" in kinds:
        c.diaphragm -= 0.07
    for _tag, kind, level in plan:
        if kind == "cardiomegaly":
            c.cardiac_scale = max(c.cardiac_scale, 1.0 + 0.14 * level)
    heart = _draw_anatomy(c)
    # before findings: an effusion or a device would not move an organ's box
    anatomy = [DrawnFinding(name, "anatomy", name.split()[0] if name.split()[0] in ("right", "left") else "central", "whole", 0,
                            [box]) for name, box in anatomy_boxes(c, heart).items()]

    drawn: list[DrawnFinding] = []
    for tag, kind, level in plan:
        f = _draw_finding(c, tag, kind, level, rsna_boxes, heart)
        if f is not None:
            f.boxes = [b for b in f.boxes if b is not None]  # a finding clipped away has no box
            if f.boxes:
                drawn.append(f)
    return _acquire(c, drawn + anatomy), drawn, undrawn, anatomy


def _draw_anatomy(c: Canvas) -> np.ndarray:
    r = c.rng
    body = c.ellipse(0.5, 0.55, 0.47 + r.normal(0, 0.01), 0.62, soft=0.04)
    c.img += 0.55 * body
    lungs = np.maximum(c.lung("right"), c.lung("left"))
    c.img -= 0.42 * lungs * (0.9 + 0.2 * _texture(c, 0.01))  # air, with faint vascular texture
    # Mediastinum and spine down the middle.
    c.img += 0.12 * np.clip(1 - np.abs(c.x - 0.5) / 0.07, 0, 1) * (c.y < c.diaphragm + 0.05)
    spine = np.clip(1 - np.abs(c.x - 0.5) / 0.028, 0, 1) * (c.y > 0.02)
    vertebrae = 0.75 + 0.25 * np.cos(c.y * 2 * np.pi / 0.055) ** 2
    c.img += 0.22 * spine * vertebrae
    # Heart: its width is the cardiothoracic ratio's numerator; AP views magnify it.
    mag = 1.08 if c.view == "AP" else 1.0
    hrx = 0.145 * c.cardiac_scale * mag
    heart = c.ellipse(0.53 + 0.02 * (c.cardiac_scale - 1), c.diaphragm - 0.14, hrx, 0.14 * mag, soft=0.05)
    c.img = np.maximum(c.img, 0.52 * heart + c.img * (1 - heart))
    # Below the domes: abdomen (soft tissue) replaces lung.
    below = np.clip((c.y - dome(c)) / 0.015, 0, 1) * body
    c.img = c.img * (1 - below) + 0.58 * below
    # Ribs: posterior arcs over each lung; clavicles at the top (higher on AP views).
    for side, cx in (("right", 0.30), ("left", 0.70)):
        lung = c.lung(side)
        for k in range(10):
            y0 = 0.13 + k * 0.062
            curve = y0 + 0.10 * ((c.x - cx) / 0.2) ** 2 - 0.03 * (k / 10)
            c.img += 0.10 * np.exp(-(((c.y - curve) / 0.008) ** 2)) * np.clip(lung * 1.5, 0, 1)
        clav, span = clavicle(c, side)
        c.img += 0.25 * np.exp(-(((c.y - clav) / 0.012) ** 2)) * span
    return heart


def _draw_finding(c: Canvas, tag: Tag, kind: str, level: int, rsna_boxes: np.ndarray, heart: np.ndarray):
    r, S = c.rng, c.size
    side, zone = _side(tag, r), _zone(tag, r)
    f = DrawnFinding(label_of(tag, kind), kind, side, zone, level, tag=tag.raw)
    sides = ["right", "left"] if side == "bilateral" else [side]
    if kind == "cardiomegaly":
        f.side, f.zone, f.boxes = "central", "whole", [box_of(heart, 0.5)]
        return f
    if kind in ("hyperinflation", "hypoinflation"):
        if kind == "hyperinflation":
            c.img -= 0.06 * np.maximum(c.lung("right"), c.lung("left"))
        f.side, f.zone = "bilateral", "whole"
        f.boxes = [c.lung_box("right"), c.lung_box("left")]
        return f
    for s in sides:
        lung = c.lung(s)
        if kind in ("opacity", "edema"):
            if kind == "edema":
                cx = 0.38 if s == "right" else 0.62
                m = c.ellipse(cx, 0.45, 0.09, 0.14, soft=0.3)
                f.zone = "middle"
            else:
                bx = _sample_rsna(rsna_boxes, s, zone, r)
                w, h = bx[2] - bx[0], bx[3] - bx[1]
                m = c.ellipse((bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2, w / 2, h / 2, soft=0.25)
            m = m * (0.55 + 0.45 * _texture(c, 0.02)) * np.clip(lung * 1.3, 0, 1)
            c.img += (0.10 + 0.08 * level) * m
        elif kind in ("nodule", "mass"):
            box = c.lung_box(s, zone)
            cx = r.uniform(box[0] + 0.2 * (box[2] - box[0]), box[2] - 0.2 * (box[2] - box[0])) / S
            cy = r.uniform(box[1] + 0.2 * (box[3] - box[1]), box[3] - 0.2 * (box[3] - box[1])) / S
            # Nodules and granulomas are drawn about three times their size relative to a real film (5-10 mm
            # on 35 cm would be 2-4 px at 128 px): at that size no 16 px patch of the ViT could see them
            # (linear-probe AUC 0.56-0.59 on the frozen encoder), and the experiments would measure the
            # resolution, not the methods. Radius 4.5-7 px now.
            rad = r.uniform(0.04, 0.065) if kind == "mass" else r.uniform(0.03, 0.04) + 0.005 * level
            rad = max(rad, 1.6 / S)
            # A solid core with a soft rim: `ellipse`'s softness scales with the radius, which
            # would leave a 2-pixel nodule at a fifth of its density.
            m = np.clip((1 - np.sqrt((c.x - cx) ** 2 + (c.y - cy) ** 2) / rad) * 2.5, 0, 1)
            calcified = "calcified" in tag.finding.lower() or "calcified" in tag.attributes or "granulom" in tag.finding.lower()
            c.img += (0.45 if calcified else 0.28) * m
        elif kind == "effusion":
            box = c.lung_box(s)
            frac = {1: 0.18, 2: 0.32, 3: 0.5}[level]
            lateral = (c.x - 0.5) * (1 if s == "left" else -1)
            level_y = box[3] / S - frac * (box[3] - box[1]) / S - 0.08 * np.clip(lateral - 0.1, 0, 1)  # meniscus
            m = np.clip((c.y - level_y) / 0.01, 0, 1) * np.clip(lung * 3, 0, 1)
            c.img += 0.40 * m
        elif kind == "atelectasis":
            box = c.lung_box(s, zone if zone != "upper" else "lower")
            cx = (box[0] + box[2]) / 2 / S + r.normal(0, 0.02)
            cy = (box[1] + box[3]) / 2 / S
            ang = r.uniform(-0.25, 0.25)
            xr, yr = c.x - cx, c.y - cy
            u, v = xr * np.cos(ang) + yr * np.sin(ang), -xr * np.sin(ang) + yr * np.cos(ang)
            m = np.clip(1 - np.sqrt((u / 0.09) ** 2 + (v / (0.012 + 0.006 * level)) ** 2), 0, 1) ** 0.5
            m = m * np.clip(lung * 2, 0, 1)
            c.img += 0.30 * m
        elif kind == "pneumothorax":
            box = c.lung_box(s)
            lateral_x = box[0] / S if s == "right" else box[2] / S
            depth = 0.03 + 0.025 * level
            edge = np.abs(c.x - lateral_x) - depth * (1.2 - (c.y - box[1] / S) / ((box[3] - box[1]) / S))
            m = np.clip(-edge / 0.006, 0, 1) * np.clip(lung * 2, 0, 1) * (c.y < (box[1] + 0.7 * (box[3] - box[1])) / S)
            c.img -= 0.10 * m  # no lung markings: darker than lung
            c.img += 0.12 * np.exp(-((edge / 0.004) ** 2)) * np.clip(lung * 2, 0, 1) * (c.y < (box[1] + 0.7 * (box[3] - box[1])) / S)
        elif kind in ("line", "wires", "pacemaker"):
            _draw_device(c, kind, f)
            return f if f.boxes else None
        b = box_of(m, 0.2)
        if b is not None:
            f.boxes.append(b)
    return f if f.boxes else None


def _draw_device(c: Canvas, kind: str, f: DrawnFinding) -> None:
    r = c.rng
    f.side, f.zone, f.level = "central", "whole", 1
    if kind == "line":  # a central venous catheter: neck -> superior vena cava
        t = np.linspace(0, 1, 200)
        xs = 0.36 + 0.16 * t + 0.03 * np.sin(t * 3) + r.normal(0, 0.01)
        ys = 0.02 + 0.40 * t
    elif kind == "wires":  # sternotomy wires: small loops down the midline
        m = np.zeros_like(c.img)
        for k in range(5):
            m = np.maximum(m, c.ellipse(0.5 + r.normal(0, 0.005), 0.30 + 0.07 * k, 0.014, 0.008, soft=0.5))
        c.img += 0.5 * m
        f.boxes = [box_of(m, 0.2)]
        return
    else:  # a pacemaker generator under the left clavicle with a lead to the heart
        gen = c.ellipse(0.76, 0.20, 0.045, 0.03, soft=0.3)
        c.img += 0.6 * gen
        t = np.linspace(0, 1, 200)
        xs, ys = 0.74 - 0.18 * t, 0.22 + 0.40 * t * t
    path = np.zeros_like(c.img)
    ix = np.clip((xs * c.size).astype(int), 0, c.size - 1)
    iy = np.clip((ys * c.size).astype(int), 0, c.size - 1)
    path[iy, ix] = 1.0
    path = np.clip(ndimage.gaussian_filter(path, max(0.6, c.size / 256)) * 4, 0, 1)
    c.img += 0.45 * path
    boxes = box_of(path, 0.2)
    if kind == "pacemaker":
        boxes = box_of(np.maximum(path, c.ellipse(0.76, 0.20, 0.045, 0.03, soft=0.3)), 0.2)
    f.boxes = [boxes]


def _acquire(c: Canvas, drawn: list[DrawnFinding]) -> np.ndarray:
    """Blur, exposure, noise, and a small rotation / scale / shift that the boxes follow."""
    r, S = c.rng, c.size
    img = ndimage.gaussian_filter(c.img, max(0.5, S / 220))
    angle = np.deg2rad(r.uniform(-4, 4))
    scale = r.uniform(0.95, 1.05)
    shift = r.normal(0, 0.015, size=2) * S
    centre = np.array([S / 2, S / 2])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale  # (x, y) forward map
    inv = np.linalg.inv(rot)
    # ndimage maps output (row, col) -> input; forward map is p' = rot (p - centre) + centre + shift.
    inv_rc = inv[::-1, ::-1]
    offset_rc = centre[::-1] - inv_rc @ (centre[::-1] + shift[::-1])
    img = ndimage.affine_transform(img, inv_rc, offset=offset_rc, order=1, mode="constant", cval=0.0)
    for f in drawn:
        moved = []
        for b in f.boxes:
            corners = np.array([[b[0], b[1]], [b[2], b[1]], [b[0], b[3]], [b[2], b[3]]]) - centre
            p = corners @ rot.T + centre + shift
            x1, y1 = np.clip(p.min(0), 0, S)
            x2, y2 = np.clip(p.max(0), 0, S)
            moved.append([round(float(x1), 2), round(float(y1), 2), round(float(x2), 2), round(float(y2), 2)])
        f.boxes = moved
    gamma = r.uniform(0.8, 1.25)
    img = np.clip(img, 0, 1) ** gamma * r.uniform(0.9, 1.1)
    img = img + r.normal(0, 0.025, size=img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)
