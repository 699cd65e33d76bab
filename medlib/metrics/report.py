"""Two committed tables about the metrics themselves, on real IU X-Ray reports:

- `labeller_vs_mesh.md`: medlib's rule-based CheXpert-style labeller against the reports' human
  MeSH tags, per observation.
- `implementation_gap.md`: how far two implementations of "the same" metric disagree on the same
  report pairs (ROUGE-L: pycocoevalcap vs rouge-score; METEOR: pycocoevalcap 1.5 vs nltk; IoU:
  strict vs MiniGPT-Med's lenient mean).
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from medlib import fileio
from medlib.boxes import format_answer, to_grid
from medlib.data.iu_xray import clean_report, read_reports
from medlib.data.sources import IU_REPORTS, RSNA_LABELS, file_digest, xrv_file
from medlib.data.splits import hash_split
from medlib.data.synthcxr import rsna_boxes
from medlib.metrics.clinical import OBSERVATIONS, label_matrix, mesh_labels, prf
from medlib.metrics.grounding import grounding_scores
from medlib.metrics.text import coco_scores, nltk_meteor
from medlib.paths import REPO_ROOT, fingerprint
from medlib.provenance import git_state, package_versions
from medlib.tables import to_markdown

# The labeller's rules are tuned on one part of the IU X-Ray reports and measured on the other, which
# no rule was written from (a hash of the report id decides, so the parts never move).
LABELLER_PARTS = {"tune": 0.7, "heldout": 0.3}


def labeller_part(uid: str) -> str:
    return hash_split("labeller:" + uid, LABELLER_PARTS)


def labeller_table(part: str | None = "heldout") -> tuple[pd.DataFrame, dict]:
    """The labeller against the MeSH tags on one part of the reports ("tune", "heldout"; None: all)."""
    if part is not None and part not in LABELLER_PARTS:
        raise ValueError(f"part must be one of {', '.join(LABELLER_PARTS)} or None; got {part!r}")
    reps = [r for r in read_reports(xrv_file(IU_REPORTS))
            if (r.findings or r.impression) and r.tags and r.tags[0].raw.lower() != "no indexing"
            and (part is None or labeller_part(r.uid) == part)]
    pred = label_matrix([" ".join([r.findings, r.impression]) for r in reps])
    gold = np.array([[1 if o in mesh_labels([t.raw for t in r.tags]) else 0 for o in OBSERVATIONS] for r in reps])
    s = prf(pred, gold)
    df = pd.DataFrame({"observation": OBSERVATIONS, "precision": s["precision"], "recall": s["recall"], "f1": s["f1"],
                       "support (MeSH)": s["support"]})
    return df, {"reports": len(reps), "micro_f1": s["micro_f1"], "macro_f1": s["macro_f1"]}


def report_pairs(n: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    """Real report pairs of the kind a generator produces: each report against the report of
    another study sharing its first MeSH tag (a plausible but imperfect "generation")."""
    reps = [r for r in read_reports(xrv_file(IU_REPORTS)) if r.findings and r.tags]
    rng = np.random.default_rng(seed)
    by_tag: dict[str, list] = {}
    for r in reps:
        by_tag.setdefault(r.tags[0].finding.lower(), []).append(r)
    pairs = []
    for i in rng.permutation(len(reps))[:n]:
        ref = reps[i]
        pool = [r for r in by_tag[ref.tags[0].finding.lower()] if r.uid != ref.uid] or reps
        other = pool[int(rng.integers(len(pool)))]
        pairs.append((clean_report(other.findings + " " + other.impression), clean_report(ref.findings + " " + ref.impression)))
    return pairs


def gap_table() -> pd.DataFrame:
    # imported here: heavy (rouge_score and nltk take about 1 s each to import): loaded by the metric that uses it
    from rouge_score import rouge_scorer

    pairs = report_pairs()
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    coco = coco_scores(preds, refs)
    rs = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge_pkg = [rs.score(r, p)["rougeL"].fmeasure for p, r in pairs]
    nltk_m = nltk_meteor(preds, refs)
    rows = [
        {"metric": "ROUGE-L", "implementation A": "pycocoevalcap Rouge (LCS F, beta 1.2)", "A": coco["rougeL"],
         "implementation B": "rouge-score rougeL (stemmer, F1)", "B": float(np.mean(rouge_pkg))},
        {"metric": "METEOR", "implementation A": "pycocoevalcap METEOR 1.5 (Java, paraphrase tables)",
         "A": coco["meteor"] if coco["meteor"] is not None else float("nan"),
         "implementation B": "nltk meteor_score (WordNet 3.0 from Debian's wordnet-base)",
         "B": nltk_m["meteor_nltk"] if nltk_m["meteor_nltk"] is not None else float("nan")},
    ]
    # IoU: a simulated grounding model on the real RSNA boxes: 70% answers with a jittered box,
    # 30% unparsable text, to show how much dropping failures flatters the mean.

    rng = np.random.default_rng(0)
    boxes = rsna_boxes()[rng.permutation(len(rsna_boxes()))[:500]]
    gold = [[to_grid(b * 1024, 1024)] for b in boxes]
    outs = []
    for g in gold:
        if rng.random() < 0.3:
            outs.append("the image shows pneumonia")
        else:
            x1, y1, x2, y2 = (np.array(g[0]) + rng.normal(0, 6, 4)).clip(0, 100).astype(int)
            outs.append(format_answer("pneumonia", [(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))]))
    gs = grounding_scores(outs, gold)
    rows.append({"metric": "IoU (simulated outputs on real RSNA boxes)", "implementation A": "strict: unparsable = 0",
                 "A": gs["iou_strict"], "implementation B": "MiniGPT-Med lenient: unparsable dropped", "B": gs["iou_lenient"]})
    df = pd.DataFrame(rows)
    df["B / A"] = df["B"] / df["A"]
    return df


def inputs_fingerprint() -> dict:
    """What the two tables depend on: the source files of the code that computes them, the data files
    and the versions of the packages that score. `medlib reproduce` rewrites nothing when it matches."""
    code = sorted(p for p in (REPO_ROOT / "medlib").rglob("*.py")
                  if p.parent.name == "metrics" or p.name in ("boxes.py", "iu_xray.py"))
    versions = {k: v for k, v in package_versions().items() if k in ("python", "numpy")}
    for name in ("pycocoevalcap", "nltk", "rouge-score", "scipy", "pandas"):
        versions[name] = _version(name)
    return {"code": fingerprint({str(p.relative_to(REPO_ROOT)): file_digest(p) for p in code}),
            "data": {IU_REPORTS: file_digest(xrv_file(IU_REPORTS)), RSNA_LABELS: file_digest(xrv_file(RSNA_LABELS))},
            "versions": versions}


def _version(name: str) -> str | None:

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def up_to_date(out_dir: Path) -> bool:
    """Whether the committed tables were computed from exactly today's inputs."""
    try:
        manifest = json.loads((Path(out_dir) / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return manifest.get("inputs") == inputs_fingerprint()


def write_reports(out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    parts = {part: labeller_table(part) for part in LABELLER_PARTS}
    lab, summary = parts["heldout"]
    tune = parts["tune"][1]
    text = ("# Rule-based labeller against the IU X-Ray MeSH tags\n\n"
            f"Held-out reports: {summary['reports']} of those with text and MeSH indexing, chosen by a hash of the report id "
            f"({LABELLER_PARTS['heldout']:.0%}); the rules' negation and uncertainty scope and their phrase lists were "
            f"developed on the other {tune['reports']} reports only (where micro-F1 is {tune['micro_f1']:.3f}, macro-F1 "
            f"{tune['macro_f1']:.3f}). Rules written before this split existed had seen every report. "
            f"Uncertain mentions count as positive. Held-out micro-F1 {summary['micro_f1']:.3f}, macro-F1 "
            f"{summary['macro_f1']:.3f} (observations with support). "
            "MeSH tags list only the indexer's major findings, so some 'false positives' are findings the report "
            "states but the indexer did not tag. Command: `medlib metrics-report`.\n\n" + to_markdown(lab, floatfmt=".3f"))
    paths = [fileio.write_text(out_dir / "labeller_vs_mesh.md", text)]
    gap = gap_table()
    text = ("# Same metric, different implementation\n\n"
            "300 real IU X-Ray reports (R2Gen-cleaned), each scored against the report of another study with the same "
            "first MeSH tag. pycocoevalcap runs METEOR 1.5 (Java; exact, stem, synonym and paraphrase matching, "
            "its own parameters); nltk's meteor_score is a re-implementation with other defaults (alpha 0.9, beta 3, gamma 0.5) "
            "and WordNet synonyms only. ClinicalBLIP's METEOR of 0.570 is the size nltk-style scores reach. "
            "Command: `medlib metrics-report`.\n\n" + to_markdown(gap, floatfmt=".3f"))
    paths.append(fileio.write_text(out_dir / "implementation_gap.md", text))

    paths.append(fileio.write_json(out_dir / "manifest.json", {
        "command": "medlib metrics-report", "git": git_state(), "inputs": inputs_fingerprint(),
        "labeller_summary": {"heldout": summary, "tune": tune}, "seed": 0}))
    return paths
