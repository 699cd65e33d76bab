"""The tiny model zoo: what "pre-trained and frozen" means on a laptop. One module per paper, this one
for what they share (the cache folder, the tokenizer, pre-training losses and probes, the model card).

Built once from SynthCXR-IU's *pre-training* split (disjoint from train/val/test) and cached under a
fingerprint, in dependency order:
- `zoo.medblip`: a byte-level BPE tokenizer trained on the report text, and BLIP-2 (OPT): the vision
  encoder pre-trained to recognise the drawn findings (multi-label) and to tell, patch by patch, which
  kind of finding lies there; a 16-layer OPT pre-trained as a language model on report and
  question-answer text; the Q-Former and projection pre-aligned on image -> caption with both frozen,
  so that MedBLIP's zero-shot arm is a real BLIP-2, not noise;
- `zoo.minigpt_med`: the tiny EVA ViT and LLaMA, sharing that tokenizer;
- `zoo.clinicalblip`: the tiny InstructBLIP, reusing the BLIP-2 ViT and the MiniGPT-Med LLaMA.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from medlib import fileio
from medlib.data.iu_xray import parse_tag
from medlib.data.render import render_study, render_with_anatomy
from medlib.data.synthcxr import (
    build,
    grounding_samples,
    location_phrase,
    lung_shapes,
    rsna_boxes,
    study_key,
    vqa_pairs,
)
from medlib.models.common import pad_sequences, train_tokenizer
from medlib.paths import REPO_ROOT, cache_root, fingerprint

ZOO_VERSION = "6"  # 5: built on the pinned CPU code paths and one thread (medlib.seeding); 6: a 16-layer tiny OPT
ZOO_SEED = 1234
ZOO_THREADS = 2  # fixed, whatever the machine: the thread count changes the rounding of every reduction
VISION_RENDERS = 4   # extra renders of each pre-training study for the vision encoder
VISION_EPOCHS = 30  # at 12 the ViT underfits its own training images (AUC 0.73); at 30, 0.89
LM_EPOCHS = 3
LM_QA_PER_STUDY = 3
ALIGN_EPOCHS = 3


# Build 0 of every paper's zoo ships with the repository (`zoo/`, see `medlib.zoo.shipped`): a first tiny run loads
# it at once, and every machine starts from the same weights. Other builds, and every build while `local_builds()`
# is in force (`medlib zoo build`), live in the cache.
SHIPPED_ZOO = REPO_ROOT / "zoo"
_LOCAL_ONLY = False


@contextmanager
def local_builds():
    """Within: every zoo folder is the cache's, so a build builds (and never writes into the shipped zoo)."""
    global _LOCAL_ONLY
    before, _LOCAL_ONLY = _LOCAL_ONLY, True
    try:
        yield
    finally:
        _LOCAL_ONLY = before


def zoo_dir(dataset_fp: str, zoo_seed: int = 0) -> Path:
    """The folder of one zoo build: the shipped one for build 0 when it is of this zoo version and data, else the
    cache's. `zoo_seed` k > 0 is another build (seed ZOO_SEED + k) of the same recipe, for checking that a
    conclusion survives rebuilding the zoo."""
    parts = (ZOO_VERSION, dataset_fp, ZOO_SEED) + ((zoo_seed,) if zoo_seed else ())
    name = fingerprint(*parts)
    if not zoo_seed and not _LOCAL_ONLY and (SHIPPED_ZOO / name / "zoo.json").exists():
        return SHIPPED_ZOO / name
    return cache_root() / "zoo" / name


def writable(root: Path, what: str) -> Path:
    """`root`, a stage about to be built, if it lies outside the shipped zoo; a shipped zoo missing a stage is
    damaged, not something to build into."""
    if SHIPPED_ZOO in Path(root).parents:
        raise RuntimeError(f"{root}: {what} would be built into the shipped zoo, which is never written: rebuild in the cache "
                           "with `medlib zoo build`; if the shipped zoo lacks a stage, `medlib zoo verify` says which")
    return root


def announce(what: str, minutes: float) -> None:
    """Say, before a build starts, what is built and how long it takes (measured on 2 cores)."""
    print(f"medlib: building {what}, about {minutes:g} minutes on 2 CPU cores (cached afterwards in {cache_root() / 'zoo'})",
          flush=True)


def save_state(path: Path, state: dict) -> Path:
    """A state dict as safetensors, beside `path` with that suffix (the zoo's weights format)."""
    # imported here: only where weights are written
    from safetensors.torch import save_file

    out = Path(path).with_suffix(".safetensors")
    fileio.write_with(out, lambda p: save_file({k: v.contiguous() for k, v in state.items()}, str(p)))
    return out


def load_state(path: Path) -> dict:
    """A state dict saved by `save_state` (safetensors), or by a zoo version that wrote `torch.save` files."""
    # imported here: only where weights are read
    from safetensors.torch import load_file

    path = Path(path)
    if path.with_suffix(".safetensors").exists():
        return load_file(str(path.with_suffix(".safetensors")))
    return torch.load(path)


def corpus(studies) -> list[str]:
    """Text the tokenizer learns from: reports, the VQA wording and the box grammar."""

    rng = np.random.default_rng(0)
    labels = sorted({lab for s in studies for lab in s.labels})
    texts = [s.report_clean for s in studies] + [s.report for s in studies]
    for s in studies:
        texts += [f"Question:{q['question']} Answer: {q['answer']}" for q in vqa_pairs(s, labels, rng)]
        texts += [g["instruction"] + " " + g["answer"] for g in grounding_samples(s, 100)]
    texts += [f"{{<{i}><{i}><{i}><{i}>}}" for i in range(101)]
    texts += ["[INST] <Img><ImageHere></Img> [vqa] [detection] [refer] [identify] [grounding] [/INST]"]
    return texts


def build_tokenizer(studies, out: Path | None = None):

    tok = train_tokenizer(corpus(studies))
    if out is not None:
        tok.save_pretrained(str(out))
    return tok


def local_tokenizer():
    """A tokenizer trained on SynthCXR-IU's pre-training and training reports, for random-weight runs
    of the paper architectures (`checkpoint="random"`)."""
    ds = build(image_size=128, progress=False)
    return build_tokenizer(ds.split("pretrain") + ds.split("train"))


def pad_right(batch: list[list[int]], pad_id: int) -> torch.Tensor:
    """Token id lists -> (B, T) right-padded."""
    return pad_sequences(batch, pad_id)[0]


def lm_text_loss(pad_id: int):
    """Causal-LM loss on every non-pad token (language-model pre-training on text)."""
    def loss(model, ids):
        return model(input_ids=ids, attention_mask=(ids != pad_id).long(), labels=ids.masked_fill(ids == pad_id, -100)).loss
    return loss


def render_variants(studies, image_size: int, num_renders: int):
    """Each study rendered again with seeds 1..num_renders: (images (N*k, S, S), label lists,
    captions, drawn findings as dicts)."""
    rb, lungs = rsna_boxes(), lung_shapes()
    imgs, labs, caps, drawns = [], [], [], []
    for seed in range(1, num_renders + 1):
        for s in studies:
            img, drawn, _ = render_study([parse_tag(t) for t in s.tags], image_size, seed, s.index, rb, lungs, view=s.view)
            imgs.append(img)
            labs.append(sorted({d.label for d in drawn}))
            drawns.append([d.to_dict() for d in drawn])
            caps.append(caption(drawns[-1]))
    return np.stack(imgs) if imgs else np.zeros((0, image_size, image_size), np.uint8), labs, caps, drawns


def anatomy_renders(studies, image_size: int, num_renders: int, seed: int = 0):
    """Each study's own render (the data set's, `seed`) and `num_renders` more (as `render_variants`), with the
    normal anatomy drawn in each (`anatomy.ANATOMY`): (images (N*(1+k), S, S), anatomy as dicts per image).
    No finding labels: what a general grounding stage learns from."""
    rb, lungs = rsna_boxes(), lung_shapes()
    imgs, anatomy = [], []
    for k in range(num_renders + 1):
        for s in studies:
            img, _, _, anat = render_with_anatomy([parse_tag(t) for t in s.tags], image_size, seed if k == 0 else k,
                                                  study_key(s.uid, s.index) if k == 0 else s.index, rb, lungs, view=s.view)
            imgs.append(img)
            anatomy.append([a.to_dict() for a in anat])
    return np.stack(imgs), anatomy


def patch_targets(drawn_lists: list[list[dict]], kinds: list[str], image_size: int, patch: int) -> torch.Tensor:
    """(N, patches, kinds): 1 where a box of that kind of finding overlaps the patch (raster order,
    as the ViT lays out its patch tokens)."""
    grid = image_size // patch
    out = torch.zeros(len(drawn_lists), grid * grid, len(kinds))
    col = {k: i for i, k in enumerate(kinds)}
    for n, drawn in enumerate(drawn_lists):
        for d in drawn:
            if d["kind"] not in col:
                continue
            for x1, y1, x2, y2 in d["boxes"]:
                c1, c2 = int(x1 // patch), min(grid - 1, int(np.ceil(x2 / patch)) - 1)
                r1, r2 = int(y1 // patch), min(grid - 1, int(np.ceil(y2 / patch)) - 1)
                for r in range(r1, r2 + 1):
                    out[n, r * grid + c1: r * grid + c2 + 1, col[d["kind"]]] = 1
    return out


def caption(drawn: list[dict]) -> str:
    """What is drawn and where, e.g. "cardiomegaly in the heart. atelectasis in the left lower lung." """
    if not drawn:
        return "no abnormality."
    return " ".join(f"{d['label']} in the {location_phrase(d)}." for d in drawn)


def _multi_hot(label_lists, labels) -> torch.Tensor:
    idx = {lab: i for i, lab in enumerate(labels)}
    out = torch.zeros(len(label_lists), len(labels))
    for i, labs in enumerate(label_lists):
        for lab in labs:
            if lab in idx:
                out[i, idx[lab]] = 1
    return out


def _mean_auc(gold: torch.Tensor, scores: torch.Tensor) -> float:
    """Mean ROC AUC over the labels with at least 3 positives and 3 negatives."""
    # imported here: only for the probe
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(gold[:, j].numpy(), scores[:, j].numpy()) for j in range(gold.shape[1])
            if 3 <= gold[:, j].sum() <= len(gold) - 3]
    return round(float(np.mean(aucs)), 4) if aucs else float("nan")


def _micro_f1(pred: torch.Tensor, gold: torch.Tensor) -> float:
    tp = (pred & gold).sum().item()
    fp = (pred & ~gold).sum().item()
    fn = (~pred & gold).sum().item()
    return 2 * tp / max(1, 2 * tp + fp + fn)


def model_card(card: dict) -> str:
    m = card["medblip"]
    return (
        "# Tiny zoo — model card\n\n"
        f"Trained on SynthCXR-IU (fingerprint `{card['dataset_fingerprint']}`), pre-training split only "
        f"({card['pretrain_studies']} studies, disjoint from train/val/test). Built in {card['build_seconds']} s.\n\n"
        "## medblip (BLIP-2, OPT with 32 decoder layers)\n"
        f"- Vision encoder: multi-label findings (mean patch token) and, per patch token, the kinds of finding there, on "
        f"{m['vision_pretrain']['images']} renders, {m['vision_pretrain']['epochs']} epochs, final loss "
        f"{m['vision_pretrain']['final_loss']:.3f}; micro-F1 on its training images {m['vision_pretrain']['train_micro_f1']:.3f}, "
        f"mean ROC AUC on the validation split {m['vision_pretrain']['val_mean_auc']:.3f}.\n"
        f"- OPT: language model on {m['opt_lm_pretrain']['texts']} cleaned reports and question-answer texts, {m['opt_lm_pretrain']['epochs']} epochs, final loss "
        f"{m['opt_lm_pretrain']['final_loss']:.3f}.\n"
        f"- Q-Former + projection: image -> caption (what is drawn, where) on {m['qformer_alignment']['captions']} renders, ViT and OPT frozen, {m['qformer_alignment']['epochs']} epochs, "
        f"final loss {m['qformer_alignment']['final_loss']:.3f}.\n"
        f"- Parameters: {m['total_params']:,}.\n\n"
        "What it is not: a medical model. It has only seen rendered radiographs and 1 164 IU X-Ray reports.\n"
    )


