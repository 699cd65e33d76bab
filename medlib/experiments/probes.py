"""What a frozen image encoder can see, measured before any report or answer is generated: the ceiling of what
a model on its features can read. `linear_probe`: whether a finding is there; `where_probe`: where it is, beyond
where its label usually is; `nearest_neighbour_reports`: the report of the training study whose image the encoder
finds closest, and `report_baselines`: ClinicalBLIP's report baselines scored and cached (that retrieval beside the
two text-only reports). Each paper module feeds them its own encoder's features (`probe_encoder`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from medlib import fileio
from medlib.boxes import parse_boxes
from medlib.experiments.priors import label_prior, most_common_report, random_training_report
from medlib.metrics.bootstrap import paired_study_bootstrap
from medlib.metrics.grounding import strict_iou
from medlib.metrics.report_generation import PER_REPORT_SCORES, score
from medlib.paths import cache_root, fingerprint, weights_fingerprint


def linear_probe(train_x: np.ndarray, train_labels: list[list[str]], val_x: np.ndarray, val_labels: list[list[str]],
                 min_positives: int = 5):
    """Per finding: a logistic regression on frozen image features, fit on train, AUC on validation. The
    ceiling of what a generator on these features can read; a finding near 0.5 is invisible to it.
    Findings with fewer than `min_positives` positives in either split are listed without an AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    tx, vx = scaler.transform(train_x), scaler.transform(val_x)
    rows = []
    for lab in sorted({lab for labs in train_labels for lab in labs}):
        ty = np.array([lab in labs for labs in train_labels])
        vy = np.array([lab in labs for labs in val_labels])
        row = {"finding": lab, "train_positives": int(ty.sum()), "val_positives": int(vy.sum()), "val_auc": float("nan")}
        if min(ty.sum(), vy.sum()) >= min_positives and (~vy).any():
            clf = LogisticRegression(max_iter=2000, C=0.1).fit(tx, ty)
            row["val_auc"] = float(roc_auc_score(vy, clf.decision_function(vx)))
        rows.append(row)
    return pd.DataFrame(rows).sort_values("val_auc", ascending=False, na_position="last").reset_index(drop=True)


def mean_token_probe(feats: dict, ds, train: list[dict], val: list[dict], skip_first: bool = False):
    """`linear_probe` on a frozen encoder's mean token per image (the first token, a CLS token, left out with
    `skip_first`), per finding: fit on the training samples' images, AUC on the validation ones', each image once."""
    labels = {st.index: st.labels for st in ds.studies}

    def split(samples):
        index = sorted({s["image_index"] for s in samples})
        return np.stack([feats[i][int(skip_first):].float().mean(0).numpy() for i in index]), [labels[i] for i in index]

    return linear_probe(*split(train), *split(val))


def _patch_cover(boxes, grid: int) -> np.ndarray:
    """(grid * grid,) bool in raster order: which patch centres lie inside any of the boxes (0..100 grid)."""
    c = (np.arange(grid) + 0.5) * 100 / grid
    cx, cy = np.meshgrid(c, c)  # rows: y
    inside = np.zeros((grid, grid), bool)
    for x1, y1, x2, y2 in boxes:
        inside |= (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
    return inside.ravel()


def where_probe(feats: dict, train: list[dict], splits: dict[str, list[dict]], max_candidates: int = 200,
                min_samples: int = 5):
    """Can the frozen EVA see *where* a finding is, not only that it is there? Per label, a logistic
    regression on the patch tokens (training findings) scores each patch as covered by that label's box. On
    each held-out finding it is scored two ways, each against what the label alone gives:
    - within the image, the AUC of its patch scores for the finding's own patches, beside the AUC of the
      label's training frequency map (how often each patch is covered for that label): the probe beats the map
      only where the image says where;
    - as a box set: of up to `max_candidates` of the label's training box sets, the one whose patches the probe
      scores highest, by strict IoU, beside the label prior (`label_prior`).
    Position-variable findings only (position-fixed ones are placed by the label), and of those the ones whose
    boxes hold some but not all patch centres (a small nodule between centres has no patch of its own to rank).
    One row per split, with a
    study-resampled interval on the paired differences; labels with under `min_samples` training findings are
    left out and counted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    train = [s for s in train if s["task"] == "detection"]
    tokens = {i: feats[i].float().numpy() for i in {s["image_index"] for s in train}}
    grid = int(round(next(iter(tokens.values())).shape[0] ** 0.5))
    rng = np.random.default_rng(0)
    fitted = {}
    for lab in sorted({s["label"] for s in train}):
        ss = [s for s in train if s["label"] == lab]
        cover = np.stack([_patch_cover(s["boxes"], grid) for s in ss])
        if len(ss) < min_samples or cover.all() or not cover.any():
            continue
        clf = LogisticRegression(max_iter=1000).fit(np.concatenate([tokens[s["image_index"]] for s in ss]), cover.ravel())
        sets = [ss[i]["boxes"] for i in sorted(rng.choice(len(ss), min(len(ss), max_candidates), replace=False))]
        fitted[lab] = (clf, cover.mean(0), sets, np.stack([_patch_cover(b, grid) for b in sets]))
    rows = []
    for split, samples in splits.items():
        var = [s for s in samples if s["position"] == "variable" and s["label"] in fitted]
        prior = [parse_boxes(t) for t in label_prior(train, var)]
        out = {"probe_auc": [], "frequency_auc": [], "probe_iou": [], "prior_iou": [], "study": []}
        for s, p in zip(var, prior):
            clf, freq, sets, covers = fitted[s["label"]]
            logit = clf.decision_function(feats[s["image_index"]].float().numpy())
            own = _patch_cover(s["boxes"], grid)
            if own.all() or not own.any():
                continue
            out["frequency_auc"].append(roc_auc_score(own, freq))  # the map's ties count half, as AUC does
            out["probe_auc"].append(roc_auc_score(own, logit))
            pick = sets[int(np.argmax(np.where(covers.any(1), (covers * logit).sum(1), -np.inf)))]
            out["probe_iou"].append(strict_iou(pick, s["boxes"]))
            out["prior_iou"].append(strict_iou(p, s["boxes"]))
            out["study"].append(s["study"])
        a = {k: np.array(v, dtype=float)[None] for k, v in out.items() if k != "study"}
        auc = paired_study_bootstrap(a["probe_auc"], a["frequency_auc"], out["study"])
        iou = paired_study_bootstrap(a["probe_iou"], a["prior_iou"], out["study"])
        rows.append({"split": split, "findings": len(out["study"]), "probe_auc": a["probe_auc"].mean(),
                     "frequency_auc": a["frequency_auc"].mean(), "auc_gap": auc["diff"], "auc_gap_lo": auc["lo"],
                     "auc_gap_hi": auc["hi"], "probe_better_share": float((a["probe_auc"] > a["frequency_auc"]).mean()),
                     "probe_iou": a["probe_iou"].mean(), "prior_iou": a["prior_iou"].mean(), "iou_gap": iou["diff"],
                     "iou_gap_lo": iou["lo"], "iou_gap_hi": iou["hi"],
                     "labels_left_out": len({s["label"] for s in train}) - len(fitted)})
    return pd.DataFrame(rows)


@torch.no_grad()
def image_embeddings(model, samples: list[dict], pixel_fn, batch_size: int = 64) -> torch.Tensor:
    """Mean patch token of a BLIP-family model's vision encoder (`model.vision_model`), L2-normalised."""
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out = []
    for i in range(0, len(samples), batch_size):
        h = model.vision_model(pixel_values=pixel_fn(samples[i:i + batch_size]).to(dev, dtype)).last_hidden_state[:, 1:].mean(1)
        out.append(torch.nn.functional.normalize(h.float(), dim=-1).cpu())
    return torch.cat(out)


def nearest_neighbour_reports(model, train: list[dict], test: list[dict], pixel_fn) -> list[str]:
    """The report of the training study whose image embedding is closest (cosine) to each test image.
    Call it before training: stage 1 changes the vision encoder."""
    sim = image_embeddings(model, test, pixel_fn) @ image_embeddings(model, train, pixel_fn).T
    return [train[j]["reference"] for j in sim.argmax(1).tolist()]


REPORT_SCORE_VERSION = "6"  # bump when `score` or the baselines change: cached baseline scores are keyed by it


def report_baselines(model, train: list[dict], test: list[dict], pixel_fn, model_key: str, data_key: str = "") -> dict:
    """ClinicalBLIP's baselines on the reports of `test` (the split the run reports): {"common": {"summary", "per"}, "random": {...}, "retrieval": {...}}
    (`score`'s two parts): the most common training report, a training report drawn at random, the nearest
    neighbour's report on the pre-trained ViT's features (`probes.nearest_neighbour_reports`). They depend on the data (`data_key`: e.g. the data set's fingerprint) and the pre-trained model
    only, so every arm of a sweep reuses them from the cache."""

    # the images enter through the pre-trained ViT (retrieval) and `data_key` (which render of them)
    key = fingerprint(REPORT_SCORE_VERSION, model_key, data_key, weights_fingerprint(model.vision_model),
                      [(s["id"], s["reference"], s.get("image_index", s.get("image_path"))) for s in train + test])
    path = cache_root() / "baselines" / f"clinicalblip_{key}.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            path.unlink()  # a torn file: recompute
    refs = [s["reference"] for s in test]
    out = {}
    for name, reports in (("common", most_common_report(train, len(test))), ("random", random_training_report(train, len(test))),
                          ("retrieval", nearest_neighbour_reports(model, train, test, pixel_fn))):
        summary, per = score(reports, refs)
        out[name] = {"summary": summary, "per": {k: per[k] for k in (*PER_REPORT_SCORES, "labels") if k in per}}
    fileio.write_json(path, out)
    return out
