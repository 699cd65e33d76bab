"""A rule-based CheXpert-style labeller for report text, and clinical-efficacy (CE) scores.

For each of the 14 CheXpert observations a report gets 1 (positive), 0 (negative), -1
(uncertain) or None (not mentioned). Mentions are found by phrase lists (in the spirit of the
public CheXpert labeller's, written here); each mention is classed by negation and uncertainty cues
in its sentence ("no", "without", "free of", "resolved" / "cannot exclude", "may represent",
"possible", ...). Aggregation as CheXpert: positive beats uncertain beats negative; "No Finding" is
positive when no observation but Support Devices is positive or uncertain.
"""

from __future__ import annotations

import re

import numpy as np

from medlib.metrics.text import check_pairs

OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
FIVE = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")  # CheXpert's competition labels
# The 13 observations that are something (all but No Finding): a report that says "normal" scores 0 on them,
# so CE-F1 over these asks whether the findings are right, not whether most studies are normal.
ABNORMAL = tuple(o for o in OBSERVATIONS if o != "No Finding")
# What "names a finding" means everywhere in medlib: a positive or uncertain label on one of these, the abnormal
# observations other than devices (a line or a pacemaker is not something wrong with the patient). It is also
# the rule that leaves No Finding positive.
FINDINGS = tuple(o for o in ABNORMAL if o != "Support Devices")

MENTIONS = {
    "Enlarged Cardiomediastinum": [r"mediastin\w* (?:is |are )?(?:widen\w*|enlarg\w*|prominen\w*)", r"widen\w* (?:of the )?mediastin\w*",
                                   r"(?:widen\w*|enlargement|prominence) of the (?:\w+ )?(?:mediastin\w*|cardiomediastin\w*)",
                                   r"(?:widened|enlarged|prominent) (?:\w+ )?mediastin\w*",
                                   r"enlarged cardiomediastin\w*", r"cardiomediastinal (?:silhouette|contour)s? (?:is |are )?(?:enlarged|widened|prominent)"],
    # a negation inside the span ("the heart is not enlarged") negates the mention (`_classify`); the organ named
    # after the finding counts too ("stable enlargement of the cardiac silhouette")
    "Cardiomegaly": [r"cardiomegaly", r"(?:heart|cardiac) (?:size |silhouette |shadow |contour )?(?:is |are |appears |remains |(?:may|might|could) be )?(?:\w+ )?(?:enlarged|enlargement|large|prominent)",
                     r"enlarged (?:heart|cardiac)", r"cardiac enlargement", r"heart size (?:is )?(?:upper limits of normal|borderline)",
                     r"enlargement of (?:the )?(?:\w+ )?(?:heart|cardiac (?:silhouette|shadow|contour))"],
    "Lung Lesion": [r"nodul\w*", r"\bmass(?:es)?\b", r"granuloma\w*", r"\blesions?\b", r"tumou?r", r"neoplasm", r"metasta\w*"],
    "Lung Opacity": [r"opacit\w*", r"infiltrat\w*", r"airspace (?:disease|opacit\w*)", r"densit(?:y|ies)", r"haz\w+",
                     r"\bscar\w*", r"fibros\w*", r"reticular", r"interstitial (?:markings|prominence|opacit\w*)"],
    "Edema": [r"edema", r"vascular congestion", r"pulmonary congestion", r"heart failure", r"\bchf\b", r"kerley"],
    "Consolidation": [r"consolidat\w*"],
    # "granulomatous infection" is the old, healed kind (granulomas), not pneumonia
    "Pneumonia": [r"pneumonia", r"(?<!granulomatous )\binfectio\w*"],
    "Atelectasis": [r"atelecta\w*", r"collapse"],
    "Pneumothorax": [r"pneumothora\w*"],
    "Pleural Effusion": [r"effusion", r"blunting of the (?:\w+ )?costophrenic", r"costophrenic (?:angle )?blunting", r"fluid in the pleural"],
    "Pleural Other": [r"pleural thicken\w*", r"pleural scar\w*", r"fibrothorax", r"pleural plaque"],
    "Fracture": [r"fractur\w*", r"\bfx\b", r"compression deformit\w*"],
    "Support Devices": [r"pacemaker", r"\bpicc\b", r"catheter", r"\bline\b", r"\btube\b", r"\bwires?\b", r"sternotomy", r"\bclips?\b",
                        r"\bdevice\b", r"\bport\b", r"\bstents?\b", r"prosthe\w*", r"hardware", r"\bicd\b", r"defibrillator",
                        r"\bpacer\b", r"\bleads\b"],
}
# Reports say "normal" about an organ: these imply a negative without naming the observation.
NORMAL_PHRASES = {
    "Cardiomegaly": [r"heart size (?:is |are )?(?:within )?normal", r"heart size and (?:\w+ ){1,3}(?:is |are )(?:within )?normal", r"normal heart size", r"cardiac (?:size|silhouette) (?:is )?(?:within )?normal",
                     r"normal (?:cardiac|heart) (?:size|silhouette|contour)", r"heart (?:is )?(?:not enlarged|normal in size)",
                     r"cardiomediastinal silhouette (?:is |are )?(?:within )?normal", r"normal cardiomediastinal"],
    "Enlarged Cardiomediastinum": [r"mediastin\w* (?:contours? )?(?:is |are )?(?:within )?normal", r"normal cardiomediastinal",
                                   r"cardiomediastinal silhouette (?:is |are )?(?:within )?normal"],
    "Lung Opacity": [r"lungs? (?:are |is )?clear", r"clear lungs?"],
    "Pleural Effusion": [], "Pneumothorax": [],
}
# Negation and uncertainty, in the scope CheXpert's and NegBio's published patterns use: a cue
# *before* a mention (pre-negation "no", "without", "free of", ...; pre-uncertainty "possible",
# "cannot exclude", ...) governs it only within its clause, and a cue *after* a mention counts only
# when it follows the mention directly ("X has resolved", "X is not seen", "X cannot be excluded",
# "X is likely"), never when it qualifies a later finding ("cardiomegaly with possible effusion").
NEG_PRE = (r"(?:\bno\b|\bnot\b|\bwithout\b|\bfree of\b|\bnegative for\b|\bclear of\b|\bno evidence of\b|\bno signs? of\b|"
           r"\babsence of\b|\brule[sd]? out\b|\bdeny\b|\bnor\b|\bresolution of\b|\bresolving\b|\bremoval of\b|\bnegative\b)")
UNC_PRE = (r"(?:\bcannot (?:be )?exclude\w*\b|\bcan not (?:be )?exclude\w*\b|\bmay\b|\bmight\b|\bpossibl[ey]\b|\bprobabl[ey]\b|"
           r"\blikely\b|\bquestionabl[ey]\b|\bsuspicious\b|\bsuspect\w*\b|\bconcern\w* for\b|\bversus\b|\bvs\b|\bsuggest\w*\b|"
           r"\bcould\b|\bequivocal\b|\bmaybe\b|\bpresumabl[ey]\b|\bworrisome for\b|\bquestion of\b|\bevaluat\w* for\b|\bdifferential\b|"
           r"\bconsideration\b|\bborderline\b|\bdifficult to exclude\b|\bnot (?:be )?excluded\b)")
# After the mention: an optional copula / auxiliary, then the cue, with nothing else in between.
_AUX = r"(?:\s+(?:is|are|was|were|has|have|had|has been|have been|may be|might be|could be|can ?not be|is not|are not|be|now|largely|completely|nearly))*"
NEG_POST = rf"^[^\w,;]*(?:\s*(?!and\b|or\b|with\b|but\b|but\b)\w+){{0,3}}?{_AUX}\s*(?:resolved|cleared|removed|absent|gone|not (?:seen|identified|present|visualized|appreciated|demonstrated)|no longer (?:seen|present|visualized|identified)|ruled out)\b"
# A hedge right after the mention about the finding itself ("pneumonia may be present", "an effusion could be
# seen", "atelectasis may be developing") makes it uncertain; "X may represent / may be due to Y" hedges Y, not X
# (UNC_PRE's "may" reaches Y), as CheXpert's rules read it.
UNC_POST = (rf"^[^\w,;]*{_AUX}\s*(?:excluded|not excluded|not ruled out|likely|possible|possibly|probable|probably|suspected|questionable|"
            r"in question|suggested|considered|favou?red|a consideration|versus|vs|or|not entirely excluded|"
            r"(?:may|might|could|would|can)\s+(?:also\s+)?(?:be\s+)?(?:present|seen|noted|there|developing|early|appear\w*|exist\w*|"
            r"obscured|partly|partially|the cause|a cause))\b")
# Clause boundaries a cue does not cross: contrast words, relative clauses, and an "and" / "with"
# that opens a new clause (followed by a subject and verb, or "there"), not one inside a list.
CLAUSE_BREAK = re.compile(
    r"\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bwhich\b|\bwhereas\b|\bwhile\b|\bexcept\b|\bapart from\b|"
    r"\bnonetheless\b|\bnevertheless\b|\bother than\b|\bbesides\b|"
    r"\b(?:and|with|,)\s+(?=(?:there|the|this|these|that|it|its)\b)|"
    r"\band\s+(?=\w+(?:\s+\w+)?\s+(?:is|are|was|were|has|have|appears?|remains?|demonstrates?|shows?|measures?)\b)")
# Phrases with a negation word that negate nothing (NegBio's pseudo-negations).
PSEUDO_NEG = re.compile(r"\b(?:no|without|not)\s+(?:significant\s+|interval\s+|substantial\s+|appreciable\s+)?"
                        r"(?:change|changes|changed|increase|decrease)\b|\bnot only\b|\bno longer\b(?=\s+(?:enlarged|normal))")
UNC = UNC_PRE  # kept for readers of the older name
# A negation inside the matched span: a mention pattern with a free word ("the heart is (\w+ )?enlarged") takes
# "not" as that word, and "the heart is not enlarged" is then a negative, not a positive.
_NEG_IN_SPAN = re.compile(r"\b(?:not|no|never|without)\b")
_UNC_IN_SPAN = re.compile(r"\b(?:may|might|could)\b")  # "the heart may be enlarged"


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.;!?])\s+|\n+", text.lower()) if s.strip()]


def _clause_before(sentence: str, start: int) -> str:
    """The part of the mention's clause that precedes it."""
    return CLAUSE_BREAK.split(sentence[:start])[-1]


def _classify(sentence: str, start: int, end: int) -> int:
    while end < len(sentence) and sentence[end].isalpha():  # a cue after "effusion" reads after "effusions"
        end += 1
    pre = PSEUDO_NEG.sub(" ", _clause_before(sentence, start))
    post = sentence[end:end + 60]
    if re.search(_NEG_IN_SPAN, sentence[start:end]) or re.search(NEG_PRE, pre) or re.search(NEG_POST, post):
        return 0
    if re.search(UNC_PRE, pre) or re.search(UNC_POST, post) or re.search(_UNC_IN_SPAN, sentence[start:end]):
        return -1
    return 1


def label_report(text) -> dict[str, int | None]:
    """The 14 observations of one report: 1 / 0 / -1 / None. Never raises on text."""
    out: dict[str, int | None] = {o: None for o in OBSERVATIONS}
    if not isinstance(text, str):
        return out
    found: dict[str, list[int]] = {o: [] for o in OBSERVATIONS}
    for sent in _sentences(text):
        for obs, pats in MENTIONS.items():
            for pat in pats:
                for m in re.finditer(pat, sent):
                    found[obs].append(_classify(sent, m.start(), m.end()))
        for obs, pats in NORMAL_PHRASES.items():
            if any(re.search(p, sent) for p in pats):
                found[obs].append(0)
    for obs, vals in found.items():
        if vals:
            out[obs] = 1 if 1 in vals else (-1 if -1 in vals else 0)
    abnormal = any(out[o] in (1, -1) for o in FINDINGS)
    out["No Finding"] = None if abnormal else 1
    return out


def names_finding(labels: np.ndarray) -> np.ndarray:
    """Per row of a `label_matrix` (N, 14): whether that report names a finding (any of `FINDINGS`)."""
    return labels[:, [OBSERVATIONS.index(o) for o in FINDINGS]].any(1)


def label_matrix(texts: list[str], uncertain_as: int = 1) -> np.ndarray:
    """(N, 14) 0/1 matrix; uncertain counts as `uncertain_as` (1: the "U-ones" policy)."""
    rows = []
    for t in texts:
        lab = label_report(t)
        rows.append([1 if v == 1 or (v == -1 and uncertain_as == 1) else 0 for v in (lab[o] for o in OBSERVATIONS)])
    return np.array(rows, dtype=int).reshape(len(texts), len(OBSERVATIONS))


def prf(pred: np.ndarray, gold: np.ndarray) -> dict:
    """Per-observation, micro and macro precision / recall / F1 of 0/1 matrices."""
    tp = (pred & gold).sum(0)
    fp = (pred & (1 - gold)).sum(0)
    fn = ((1 - pred) & gold).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        r = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    mp, mr = tp.sum() / max(1, tp.sum() + fp.sum()), tp.sum() / max(1, tp.sum() + fn.sum())
    return {"precision": p, "recall": r, "f1": f, "support": gold.sum(0),
            "micro_precision": float(mp), "micro_recall": float(mr), "micro_f1": float(2 * mp * mr / (mp + mr)) if mp + mr else 0.0,
            "macro_f1": float(f[gold.sum(0) > 0].mean()) if (gold.sum(0) > 0).any() else 0.0}


def ce_scores(predictions: list[str], references: list[str], labels: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """CE precision / recall / F1 between generated and reference reports (labels of both by this
    labeller), on the 14 observations, on the 13 without No Finding (`ce13_`: abnormal-only) and on the
    5 competition labels, plus the mean cosine similarity of the label vectors. `labels`: the two
    `label_matrix` results, if already at hand."""
    check_pairs(predictions, references, "ce_scores")
    p, g = labels if labels is not None else (label_matrix(predictions), label_matrix(references))
    all14 = prf(p, g)
    idx5 = [OBSERVATIONS.index(o) for o in FIVE]
    five = prf(p[:, idx5], g[:, idx5])
    idx13 = [OBSERVATIONS.index(o) for o in ABNORMAL]
    abnormal = prf(p[:, idx13], g[:, idx13])
    norm = np.linalg.norm(p, axis=1) * np.linalg.norm(g, axis=1)
    cos = np.where(norm > 0, (p * g).sum(1) / np.where(norm > 0, norm, 1), (p == g).all(1).astype(float))
    return {"ce_micro_f1": all14["micro_f1"], "ce_macro_f1": all14["macro_f1"], "ce_micro_precision": all14["micro_precision"],
            "ce_micro_recall": all14["micro_recall"], "ce5_micro_f1": five["micro_f1"], "ce5_macro_f1": five["macro_f1"],
            "ce13_micro_f1": abnormal["micro_f1"], "ce13_macro_f1": abnormal["macro_f1"],
            "label_cosine": float(cos.mean()), "per_sample": {"label_cosine": cos.tolist()}}


def ce_counts(predictions: list[str], references: list[str], labels: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(N, 3) per-report true positives, false positives and false negatives over the 14
    observations: what a bootstrap of the micro F1 resamples. `labels` as in `ce_scores`."""
    p, g = labels if labels is not None else (label_matrix(predictions), label_matrix(references))
    return np.stack([(p & g).sum(1), (p & (1 - g)).sum(1), ((1 - p) & g).sum(1)], axis=1)


def micro_f1(counts: np.ndarray) -> float:
    """Micro F1 from summed (tp, fp, fn) rows; 0 when nothing was predicted or present."""
    tp, fp, fn = np.asarray(counts).sum(0)
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


# MeSH major terms of IU X-Ray -> CheXpert observation (for validating the labeller on real reports).
def _f1(tot, micro: bool):
    """Micro or macro F1 of summed (..., observations, [tp, fp, fn]) counts, vectorised over the leading axis;
    macro over the observations present in the references (tp + fn > 0)."""
    tp, fp, fn = tot[..., 0], tot[..., 1], tot[..., 2]
    if micro:
        tp, fp, fn = tp.sum(-1), fp.sum(-1), fn.sum(-1)
        return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    f = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    present = (tp + fn) > 0
    return (f * present).sum(-1) / np.maximum(present.sum(-1), 1)


def _share(tot):
    return tot[..., 0] / np.maximum(tot[..., 1], 1)


# CE metrics computed from counts summed over reports (what an aggregation resamples): metric -> (observations,
# statistic of their summed counts)
CE_STATISTICS = {
    "ce13_micro_f1": (ABNORMAL, lambda t: _f1(t, True)), "ce13_macro_f1": (ABNORMAL, lambda t: _f1(t, False)),
    "ce5_micro_f1": (FIVE, lambda t: _f1(t, True)), "ce5_macro_f1": (FIVE, lambda t: _f1(t, False)),
    "ce_micro_f1": (OBSERVATIONS, lambda t: _f1(t, True)), "abnormal_share": (FINDINGS, _share),
}


def label_array(strings) -> np.ndarray:
    """Label strings (`label_strings`: 14 digits, leading zeros possibly lost in a CSV) as a (reports, 14) array."""
    strings = [str(s).zfill(len(OBSERVATIONS)) for s in strings]
    return np.array([[int(c) for c in s] for s in strings], dtype=int).reshape(len(strings), len(OBSERVATIONS))


def statistic_counts(pred_labels: np.ndarray, gold: np.ndarray, metric: str) -> np.ndarray:
    """Per report, what `metric`'s statistic sums: (reports, observations, [tp, fp, fn]), or for
    `abnormal_share` (reports, [names a finding, 1])."""
    obs, _ = CE_STATISTICS[metric]
    idx = [OBSERVATIONS.index(o) for o in obs]
    p, g = pred_labels[..., idx], gold[..., idx]
    if metric == "abnormal_share":
        named = p.any(-1).astype(float)
        return np.stack([named, np.ones_like(named)], -1)
    return np.stack([p & g, p & (1 - g), (1 - p) & g], -1).astype(float)


MESH_TO_OBSERVATION = {
    "cardiomegaly": "Cardiomegaly", "opacity": "Lung Opacity", "airspace disease": "Lung Opacity", "infiltrate": "Lung Opacity",
    "density": "Lung Opacity", "cicatrix": "Lung Opacity", "pulmonary fibrosis": "Lung Opacity", "scar": "Lung Opacity",
    "pulmonary edema": "Edema", "pulmonary congestion": "Edema", "heart failure": "Edema",
    "consolidation": "Consolidation", "pneumonia": "Pneumonia",
    "pulmonary atelectasis": "Atelectasis", "atelectases": "Atelectasis",
    "pneumothorax": "Pneumothorax", "pleural effusion": "Pleural Effusion",
    "nodule": "Lung Lesion", "mass": "Lung Lesion", "granuloma": "Lung Lesion", "calcified granuloma": "Lung Lesion",
    "granulomatous disease": "Lung Lesion", "lung neoplasms": "Lung Lesion",
    "fractures, bone": "Fracture",
    "catheters, indwelling": "Support Devices", "surgical instruments": "Support Devices", "implanted medical device": "Support Devices",
    "medical device": "Support Devices", "tube, inserted": "Support Devices", "stents": "Support Devices", "sutures": "Support Devices",
    "normal": "No Finding",
}


def mesh_labels(tags: list[str]) -> set[str]:
    out = set()
    for t in tags:
        term = t.split("/")[0].strip().lower()
        if term == "thickening" and "pleura" in t.lower():
            out.add("Pleural Other")
        elif term == "mediastinum" and any(w in t.lower() for w in ("enlarged", "widened")):
            out.add("Enlarged Cardiomediastinum")
        elif term in MESH_TO_OBSERVATION:
            out.add(MESH_TO_OBSERVATION[term])
    return out
