"""MiniGPT-Med's tiny EVA ViT and LLaMA, beside the BLIP-2 zoo and sharing its tokenizer."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaForCausalLM

from medlib import fileio
from medlib.data.anatomy import ANATOMY
from medlib.data.synthcxr import build, grounding_samples, grounding_samples_of, vqa_pairs
from medlib.models import minigpt_med
from medlib.models.common import images_to_tensor, load_tokenizer
from medlib.paths import fingerprint
from medlib.seeding import keeps_process_state, pin_threads
from medlib.train import TrainConfig, train
from medlib.zoo import (
    VISION_RENDERS,
    ZOO_SEED,
    ZOO_THREADS,
    _multi_hot,
    anatomy_renders,
    announce,
    lm_text_loss,
    load_state,
    pad_right,
    patch_targets,
    render_variants,
    save_state,
    writable,
)
from medlib.zoo.medblip import build_medblip_zoo

MINIGPT_ZOO_VERSION = "2"  # 2: EVA also learns, per patch token, which kinds of finding cover it
EVA_EPOCHS = 12
LLAMA_EPOCHS = 4
# The EVA's second stage: the same targets for 48 more epochs, from the 12-epoch weights. At 12 epochs the EVA
# saw *that* a finding is there but hardly *where*: a linear probe on its patch tokens ranked a position-variable
# finding's own patches within the image little better than the label's training frequency map (within-image AUC
# 0.896 against 0.883, validation), and the training box set it scored highest lost to the label prior (strict IoU
# 0.154 against 0.166), so no LLM on top could place a finding by the image (`medlib.experiments.minigpt_med.
# where_probe`). Chosen on validation: 18 more epochs 0.209 IoU, 48 more 0.242 (AUC 0.951, 0.962); 30 epochs
# from scratch 0.195. A stage of its own, so the LLaMA built after the first stage, which the ClinicalBLIP zoo
# reuses, stays the same.
EVA_MORE_EPOCHS = 48


# MiniGPT-Med fine-tunes MiniGPT-v2's checkpoint, whose projection and LoRA had already learnt to ground on natural
# images (its three stages); the tiny LLaMA above had read box text only, so a fresh projection had to learn where
# from one split's findings and placed them where their label usually is (see GROUNDING_EPOCHS). The grounding
# stage is the tiny stand-in for that checkpoint: projection + LoRA trained on the pre-training split's grounding
# samples, over its own renders and VISION_RENDERS more of each study (where a finding lies varies between them),
# the LoRA then merged into the LLaMA; MiniGPT-Med's fine-tuning starts from it with a fresh LoRA. Chosen on
# validation (grounding-only, LoRA r=64, mean position-variable strict IoU of seeds 0 and 1; the label prior scores
# 0.166 there): without the stage 0.151; 2 epochs 0.171, 6 0.182, 12 0.200, 24 0.243. Still rising at 24; not tried
# beyond, as each 12 epochs cost about 6.5 minutes of zoo build on 2 cores.
GROUNDING_EPOCHS = 24
# The general grounding stage: the same training, but on the normal anatomy every render draws (heart, each lung,
# hemidiaphragm and clavicle, spine, mediastinum: `anatomy.ANATOMY`), never a finding label. MiniGPT-v2 learned to
# ground objects of natural images before MiniGPT-Med taught it diseases; this stage is that order in small, where
# the in-domain stage above had learned the very findings the test asks about. GENERAL_SAMPLES grounding samples of
# each render (of its 27: 9 structures x detection, refer, identify), drawn once; GENERAL_EPOCHS passes. Not tuned:
# about half the in-domain stage's optimizer steps, so that a build of every paper's zoo stays near its budget.
# LoRA also on the LLaMA's output layer, in this stage only: BPE gives "right", "heart" and "spine" written after
# `<p>` tokens of their own, which the tiny LLaMA never wrote (its pre-training text had only findings there), and
# LoRA on q_proj / v_proj cannot raise an output it never learnt: with it alone the stage answered `<p>[` for those
# structures (strict IoU 0.02, 0.11 and 0.59 on the test images' anatomy, against 0.91 for the left lung). LLaMA-2,
# under MiniGPT-v2, knows every word.
GENERAL_SAMPLES = 3
GENERAL_EPOCHS = 12
GENERAL_TARGETS = ("q_proj", "v_proj", "lm_head")


@keeps_process_state
def build_minigpt_zoo(force: bool = False, image_size: int = 128, progress: bool = True,
                      later_stages: bool = True, zoo_seed: int = 0, in_domain: bool = True) -> Path:
    """The tiny EVA ViT (multi-label findings and, per patch token, the kinds of finding under it, on the
    pre-training renders) and tiny LLaMA (language model on reports, question-answer text and grounding
    answers of the pre-training split), beside the BLIP-2 zoo and sharing its tokenizer; then the EVA's second
    stage (`eva_path`), the general grounding stage (`general_path`) and, unless `in_domain=False`, the in-domain
    one (`grounded_path`). `later_stages=False` leaves those out, for the ClinicalBLIP zoo, which takes only the LLaMA. `zoo_seed` k > 0: another build (seed ZOO_SEED + k), beside
    the BLIP-2 zoo's build k. Returns the folder of the first stage."""
    root = _build_first_stage(force, image_size, progress, zoo_seed)
    if later_stages:
        _build_second_stage(root, force, image_size, progress, zoo_seed)
        _build_general_stage(root, force, image_size, progress, zoo_seed)
        if in_domain:
            _build_grounding_stage(root, force, image_size, progress, zoo_seed)
    return root


# What each starting point of MiniGPT-Med's fine-tuning is, as the tables name it.
STARTS = {"general": "general grounding stage: normal anatomy of the pre-training renders, no finding labels",
          "in-domain": "in-domain grounding stage: the tested findings of the pre-training renders",
          "none": "no grounding stage: the text-only LLaMA and a fresh projection"}


def start_path(root: Path, start: str) -> Path:
    """The folder a fine-tuning starts from (`STARTS`): `llama/` and, after a grounding stage, `llama_proj.pt`."""
    return {"general": general_path, "in-domain": grounded_path, "none": lambda r: r}[start](root)


def general_path(root: Path) -> Path:
    """The general grounding stage's folder: `llama/` (LoRA merged) and `llama_proj.pt` (the projection)."""
    return root / f"general_{fingerprint(EVA_MORE_EPOCHS, GENERAL_SAMPLES, GENERAL_EPOCHS, GENERAL_TARGETS)}"


def grounded_path(root: Path) -> Path:
    """The grounding stage's folder: `llama/` (LoRA merged) and `llama_proj.pt` (the projection)."""
    return root / f"grounded_{fingerprint(EVA_MORE_EPOCHS, GROUNDING_EPOCHS)}"


def eva_path(root: Path) -> Path:
    """The EVA weights MiniGPT-Med's tiny profile runs on: the second stage's."""
    return root / f"eva_more_{fingerprint(EVA_MORE_EPOCHS)}" / "eva.pt"


def _eva_pretraining(ds, pre, image_size: int, labels: list[str]):
    """The EVA's pre-training data and loss: the pre-training split's images and VISION_RENDERS more renders of
    each (the BLIP ViT's), their findings (multi-hot) and, per patch token, the kinds of finding whose box
    covers it."""
    extra_imgs, extra_labels, _, extra_drawn = render_variants(pre, image_size, VISION_RENDERS)
    images = torch.cat([images_to_tensor(ds.images[[s.index for s in pre]]), images_to_tensor(extra_imgs)])
    targets = _multi_hot([s.labels for s in pre] + extra_labels, labels)
    kinds = sorted({d["kind"] for s in pre for d in s.drawn})
    drawn = [s.drawn for s in pre] + extra_drawn
    return images, targets, kinds, drawn


def _eva_heads(vit, labels, kinds) -> torch.nn.ModuleDict:
    head, patch_head = torch.nn.Linear(vit.embed_dim, len(labels)), torch.nn.Linear(vit.embed_dim, len(kinds))
    return torch.nn.ModuleDict({"vit": vit, "head": head, "patch_head": patch_head})


def _eva_loss(images, targets, where):
    def loss(m, b):
        tokens = m["vit"].forward_features(images[b])[:, m["vit"].num_prefix_tokens:]  # (B, patches, width)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        return bce(m["head"](tokens.mean(1)), targets[b]) + bce(m["patch_head"](tokens), where[b])

    return loss


def _eva_config(epochs: int, desc: str) -> TrainConfig:
    return TrainConfig(num_epochs=epochs, lr=3e-3, batch_size=64, warmup_ratio=0.1, weight_decay=0.05, desc=desc)


def _build_first_stage(force: bool, image_size: int, progress: bool, zoo_seed: int = 0) -> Path:
    # imported here: timm (about 1 s), only where the EVA is built
    import timm  # noqa: F401  (the EVA class lives in timm)

    base = build_medblip_zoo(image_size=image_size, progress=progress, zoo_seed=zoo_seed)
    ds = build(image_size=image_size, progress=progress)
    root = base / f"minigpt_med_{fingerprint(MINIGPT_ZOO_VERSION, EVA_EPOCHS, LLAMA_EPOCHS)}"
    if (root / "zoo.json").exists() and not force:
        return root
    announce("the tiny MiniGPT-Med zoo's EVA ViT and LLaMA" + (f" (build {zoo_seed})" if zoo_seed else ""), 2.2)
    writable(root, "MiniGPT-Med's first stage")
    torch.manual_seed(ZOO_SEED + zoo_seed)
    pin_threads(ZOO_THREADS)  # one thread count for every zoo build, so a rebuild gives the same weights (medlib.seeding)
    started = time.time()
    pre = ds.split("pretrain")
    tok = load_tokenizer(base / "tokenizer")
    labels = sorted({lab for s in pre for lab in s.labels})

    # EVA ViT: multi-label findings from the mean patch token and, for every patch token, the kinds of
    # finding whose box covers it (as the BLIP ViT learns): grounding reads *where* from the patch tokens, and
    # the dense target makes a small nodule matter to the patch that holds it (validation linear-probe AUC,
    # mean-token target alone -> with this one: nodule 0.50 -> 0.83, opacity 0.71 -> 0.82, calcified granuloma
    # 0.60 -> 0.69). The same renders as the BLIP ViT.
    images, targets, kinds, drawn = _eva_pretraining(ds, pre, image_size, labels)
    vit = minigpt_med.vit_tiny(image_size)
    where = patch_targets(drawn, kinds, image_size, vit.patch_embed.patch_size[0])
    mod = _eva_heads(vit, labels, kinds)
    v = train(mod, list(range(len(images))), torch.tensor, _eva_loss(images, targets, where),
              _eva_config(EVA_EPOCHS, "zoo: EVA ViT"))

    # LLaMA: reports, questions and grounding answers (text only).
    rng = np.random.default_rng(ZOO_SEED + zoo_seed)
    texts = [s.report_clean for s in pre]
    for s in pre:
        qa = vqa_pairs(s, labels, rng)
        texts += [f"{q['question']} {q['answer']}" for q in qa[:3]]
        texts += [f"{g['instruction']} {g['answer']}" for g in grounding_samples(s, image_size)]
    ids = [[tok.bos_token_id] + tok(t + tok.eos_token, truncation=True, max_length=96)["input_ids"] for t in texts]
    llm = LlamaForCausalLM(minigpt_med.llama_tiny_config(len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id))

    t = train(llm, ids, lambda b: pad_right(b, tok.pad_token_id), lm_text_loss(tok.pad_token_id), TrainConfig(num_epochs=LLAMA_EPOCHS, lr=3e-3, batch_size=32, desc="zoo: LLaMA"))
    root.mkdir(parents=True, exist_ok=True)
    save_state(root / "eva.pt", vit.state_dict())
    llm.save_pretrained(str(root / "llama"))
    card = {"eva": {"epochs": EVA_EPOCHS, "images": len(images), "final_loss": v["loss_curve"][-1][1]},
            "llama": {"epochs": LLAMA_EPOCHS, "texts": len(ids), "final_loss": t["loss_curve"][-1][1]},
            "build_seconds": round(time.time() - started, 1)}
    fileio.write_text(root / "MODEL_CARD.md",
                      "# Tiny zoo — MiniGPT-Med models\n\n"
                      f"- EVA ViT (timm `Eva`, 3 blocks, width 64, patch 16): multi-label findings (mean patch token) and the kinds of "
                      f"finding under each patch token, on {len(images)} renders of the pre-training split, {EVA_EPOCHS} epochs, final BCE {card['eva']['final_loss']:.3f}.\n"
                      f"- LLaMA (4 layers, width 64): language model on {len(ids)} report, question and grounding texts of the "
                      f"pre-training split, {LLAMA_EPOCHS} epochs, final loss {card['llama']['final_loss']:.3f}.\n"
                      f"- Built in {card['build_seconds']} s. Tokenizer: the BLIP-2 zoo's.\n")
    fileio.write_json(root / "zoo.json", card)
    return root


def _later_stage_data(image_size: int, progress: bool, zoo_seed: int = 0):
    """What each later stage opens with, in this order (the random stream, and so the weights, depend on it): the
    zoo's seed and thread count, then the pre-training split, its labels and its renders (`_eva_pretraining`).
    Returns (studies, labels, (images, targets, kinds, drawn))."""
    ds = build(image_size=image_size, progress=progress)
    torch.manual_seed(ZOO_SEED + zoo_seed)
    pin_threads(ZOO_THREADS)
    pre = ds.split("pretrain")
    labels = sorted({lab for s in pre for lab in s.labels})
    return pre, labels, _eva_pretraining(ds, pre, image_size, labels)


def _build_second_stage(root: Path, force: bool, image_size: int, progress: bool, zoo_seed: int = 0) -> None:
    """The EVA's second stage: the first stage's weights trained EVA_MORE_EPOCHS more on the same targets,
    fresh heads, its own warm-up and decay; cached beside them (`eva_path`)."""
    out = eva_path(root)
    if (out.parent / "zoo.json").exists() and not force:
        return
    announce("the second stage of the tiny MiniGPT-Med zoo's EVA ViT", 3.7)
    writable(out.parent, "the EVA's second stage")
    started = time.time()
    _, labels, (images, targets, kinds, drawn) = _later_stage_data(image_size, progress, zoo_seed)
    vit = minigpt_med.vit_tiny(image_size)
    vit.load_state_dict(load_state(root / "eva.pt"))
    where = patch_targets(drawn, kinds, image_size, vit.patch_embed.patch_size[0])
    v = train(_eva_heads(vit, labels, kinds), list(range(len(images))), torch.tensor, _eva_loss(images, targets, where),
              _eva_config(EVA_MORE_EPOCHS, "zoo: EVA ViT, second stage"))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_state(out, vit.state_dict())
    fileio.write_text(out.parent / "MODEL_CARD.md",
                      "# Tiny zoo — MiniGPT-Med's EVA ViT, second stage\n\n"
                      f"- The first stage's EVA ViT (`../eva.pt`) trained {EVA_MORE_EPOCHS} more epochs on the same targets and "
                      f"{len(images)} renders, fresh heads, final BCE {v['loss_curve'][-1][1]:.3f}: the EVA MiniGPT-Med's tiny "
                      "profile runs on (the first stage's LLaMA and the ClinicalBLIP zoo are unchanged).\n"
                      f"- Built in {round(time.time() - started, 1)} s.\n")
    fileio.write_json(out.parent / "zoo.json", {"eva": {"from": "../eva.pt", "epochs": EVA_MORE_EPOCHS, "images": len(images),
                                                        "final_loss": v["loss_curve"][-1][1]},
                                                "build_seconds": round(time.time() - started, 1)})


def _grounding_model(root: Path, base: Path, images: torch.Tensor, targets: tuple[str, ...] = ("q_proj", "v_proj")):
    """The second-stage EVA (frozen) and the first stage's LLaMA in MiniGPT-Med's architecture, LoRA r=64 on
    `targets` and the projection trainable; with the frozen features of `images` and the tokenizer."""
    tok = load_tokenizer(base / "tokenizer")
    vit = minigpt_med.vit_tiny(images.shape[-1])
    vit.load_state_dict(load_state(eva_path(root)))
    model = minigpt_med.MiniGPTMed(vit, LlamaForCausalLM.from_pretrained(str(root / "llama")))
    minigpt_med.freeze_for_training(model, 64, 16, 0.05, targets=targets)
    feats = torch.cat([model.vit_features(images[i:i + 256]) for i in range(0, len(images), 256)])  # (N, patches, C)
    return model, tok, feats


def _train_grounding(model, tok, feats, samples: list[dict], epochs: int, desc: str, out: Path) -> dict:
    """Projection + LoRA trained on `samples` (each with its `image_index` into `feats`), the LoRA merged and saved
    in `out` beside the projection. Returns the training history."""
    def loss(m, batch):
        img = m.project(feats[[b["image_index"] for b in batch]])
        return minigpt_med.answer_loss(m, tok, img, [b["instruction"] for b in batch], [b["answer"] for b in batch])

    g = train(model, samples, lambda batch: batch, loss, TrainConfig(num_epochs=epochs, lr=3e-3, batch_size=32, desc=desc))
    out.mkdir(parents=True, exist_ok=True)
    model.llm.merge_and_unload().save_pretrained(str(out / "llama"))
    save_state(out / "llama_proj.pt", model.llama_proj.state_dict())
    return g


def _write_card(out: Path, title: str, what: str, card: dict) -> None:
    fileio.write_text(out / "MODEL_CARD.md", f"# Tiny zoo — {title}\n\n- {what}\n- Built in {card['build_seconds']} s.\n")
    fileio.write_json(out / "zoo.json", card)


def _stage_start(out: Path, force: bool, what: str, minutes: float, image_size: int, progress: bool, zoo_seed: int):
    """None when the stage in `out` is built (and not `force`d); else announce it and return the BLIP-2 zoo's folder
    (its tokenizer)."""
    if (out / "zoo.json").exists() and not force:
        return None
    announce(f"the tiny MiniGPT-Med zoo's {what}", minutes)
    writable(out, f"the {what}")
    return build_medblip_zoo(image_size=image_size, progress=progress, zoo_seed=zoo_seed)


def _build_grounding_stage(root: Path, force: bool, image_size: int, progress: bool, zoo_seed: int = 0) -> None:
    """MiniGPT-v2's grounding, tiny and in-domain (see GROUNDING_EPOCHS): `_grounding_model` trained on
    `[detection]`, `[refer]` and `[identify]` of every finding of the pre-training split's renders; cached in
    `grounded_path`."""
    out = grounded_path(root)
    base = _stage_start(out, force, "in-domain grounding stage", 13.5, image_size, progress, zoo_seed)
    if base is None:
        return
    started = time.time()
    pre, _, (images, _, _, drawn) = _later_stage_data(image_size, progress, zoo_seed)  # the study's render, then VISION_RENDERS more
    uids = [s.uid for s in pre] * (1 + VISION_RENDERS)
    model, tok, feats = _grounding_model(root, base, images)
    samples = [{**g, "image_index": n} for n, d in enumerate(drawn) for g in grounding_samples_of(d, uids[n], image_size)]
    g = _train_grounding(model, tok, feats, samples, GROUNDING_EPOCHS, "zoo: in-domain grounding stage", out)
    card = {"grounding": {"epochs": GROUNDING_EPOCHS, "samples": len(samples), "images": len(images),
                          "final_loss": g["loss_curve"][-1][1]}, "build_seconds": round(time.time() - started, 1)}
    _write_card(out, "MiniGPT-Med's in-domain grounding stage",
                f"The second-stage EVA (frozen) and the first stage's LLaMA; LoRA r=64 on q_proj / v_proj and the projection "
                f"trained {GROUNDING_EPOCHS} epochs on {len(samples)} grounding samples of the findings drawn in {len(images)} "
                f"renders of the pre-training split, final loss {card['grounding']['final_loss']:.3f}; the LoRA merged into `llama/`.",
                card)


def _build_general_stage(root: Path, force: bool, image_size: int, progress: bool, zoo_seed: int = 0) -> None:
    """MiniGPT-v2's grounding, tiny and general (see GENERAL_EPOCHS): `_grounding_model` trained on `[detection]`,
    `[refer]` and `[identify]` of the normal anatomy of the pre-training split's renders, no finding label; cached in
    `general_path`."""
    out = general_path(root)
    base = _stage_start(out, force, "general grounding stage", 11, image_size, progress, zoo_seed)
    if base is None:
        return
    ds = build(image_size=image_size, progress=progress)
    started = time.time()
    torch.manual_seed(ZOO_SEED + zoo_seed)
    pin_threads(ZOO_THREADS)
    pre = ds.split("pretrain")
    images, anatomy = anatomy_renders(pre, image_size, VISION_RENDERS)
    uids = [s.uid for s in pre] * (1 + VISION_RENDERS)
    rng = np.random.default_rng(ZOO_SEED + zoo_seed)
    samples = []
    for n, anat in enumerate(anatomy):
        every = grounding_samples_of(anat, uids[n], image_size)
        samples += [{**every[i], "image_index": n} for i in rng.choice(len(every), GENERAL_SAMPLES, replace=False)]
    model, tok, feats = _grounding_model(root, base, images_to_tensor(images), GENERAL_TARGETS)
    g = _train_grounding(model, tok, feats, samples, GENERAL_EPOCHS, "zoo: general grounding stage", out)
    card = {"grounding": {"epochs": GENERAL_EPOCHS, "samples": len(samples), "images": len(images), "structures": list(ANATOMY),
                          "final_loss": g["loss_curve"][-1][1]}, "build_seconds": round(time.time() - started, 1)}
    _write_card(out, "MiniGPT-Med's general grounding stage (MiniGPT-v2's checkpoint, tiny)",
                f"The second-stage EVA (frozen) and the first stage's LLaMA; LoRA r=64 on {' / '.join(GENERAL_TARGETS)} and the "
                f"projection trained {GENERAL_EPOCHS} epochs on {len(samples)} grounding samples of the normal anatomy ({', '.join(ANATOMY)}) "
                f"in {len(images)} renders of the pre-training split, no finding label, final loss "
                f"{card['grounding']['final_loss']:.3f}; the LoRA merged into `llama/`.", card)
