"""MedBLIP's tiny BLIP-2 (OPT): the base of the zoo (its tokenizer and ViT serve the other papers' zoos)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from medlib import fileio
from medlib.data.synthcxr import build, vqa_pairs
from medlib.models import medblip
from medlib.models.common import count_parameters, images_to_tensor
from medlib.models.medblip import PROMPT
from medlib.seeding import keeps_process_state, pin_threads
from medlib.train import TrainConfig, train
from medlib.zoo import (
    ALIGN_EPOCHS,
    LM_EPOCHS,
    LM_QA_PER_STUDY,
    VISION_EPOCHS,
    VISION_RENDERS,
    ZOO_SEED,
    ZOO_THREADS,
    ZOO_VERSION,
    _mean_auc,
    _micro_f1,
    _multi_hot,
    announce,
    build_tokenizer,
    caption,
    lm_text_loss,
    model_card,
    pad_right,
    patch_targets,
    render_variants,
    writable,
    zoo_dir,
)


@keeps_process_state
def build_medblip_zoo(force: bool = False, image_size: int = 128, progress: bool = True, zoo_seed: int = 0) -> Path:
    """Build (or find) the tiny zoo; returns its folder. Minutes on 2 CPU cores. `zoo_seed` k > 0: another
    build of the same recipe (initialisation, data order and sampled questions seeded ZOO_SEED + k)."""

    ds = build(image_size=image_size, progress=progress)
    root = zoo_dir(ds.fingerprint, zoo_seed)
    if (root / "zoo.json").exists() and not force:
        return root
    announce("the tiny MedBLIP zoo (BLIP-2 with OPT)" + (f" (build {zoo_seed})" if zoo_seed else ""), 6.4)
    writable(root, "MedBLIP's BLIP-2")
    seed = ZOO_SEED + zoo_seed
    torch.manual_seed(seed)
    pin_threads(ZOO_THREADS)  # one thread count for every zoo build, so a rebuild gives the same weights (medlib.seeding)
    started = time.time()
    pre = ds.split("pretrain")
    root.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(pre, root / "tokenizer")
    card = {"dataset_fingerprint": ds.fingerprint, "pretrain_studies": len(pre), "version": ZOO_VERSION, "zoo_seed": zoo_seed}
    model, stats = pretrain_medblip(ds, pre, tok, image_size, progress, seed)
    model.save_pretrained(str(root / "medblip"))
    card["medblip"] = stats
    card["build_seconds"] = round(time.time() - started, 1)
    fileio.write_text(root / "MODEL_CARD.md", model_card(card))
    fileio.write_json(root / "zoo.json", card)  # last: marks a complete build
    return root


def pretrain_medblip(ds, studies, tok, image_size: int, progress: bool = True, seed: int = ZOO_SEED):
    """Stages 2-4 of the module docstring for the BLIP-2 (OPT) tiny model."""
    ids = (len(tok), image_size, tok.convert_tokens_to_ids("<image>"), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    cfg = medblip.tiny_config(*ids)
    # Initialised as a 32-layer OPT, then cut to its first TINY_OPT_LAYERS: the random stream up to the
    # vision stage is then the one zoo version 5 (32 layers) drew, so the ViT trained below, which
    # ClinicalBLIP's zoo reuses, is that version's ViT weight for weight.
    model = medblip.build(medblip.tiny_config(*ids, num_layers=32))
    medblip.keep_decoder_layers(model, cfg.text_config.num_hidden_layers)
    labels = sorted({lab for s in studies for lab in s.labels})
    # the stages in this order: each draws from the random stream the one before leaves
    vision, vis_images, captions = _vision_stage(model, cfg, ds, studies, labels, image_size, seed)
    language = _language_stage(model.language_model, studies, labels, tok, seed)
    alignment = _alignment_stage(model, cfg, tok, vis_images, captions, seed)
    stats = {"vision_pretrain": vision, "opt_lm_pretrain": language, "qformer_alignment": alignment, **count_parameters(model)}
    return model, stats


def _vision_stage(model, cfg, ds, studies, labels: list[str], image_size: int, seed: int) -> tuple[dict, torch.Tensor, list[str]]:
    """(2) The vision encoder: multi-label findings from the mean of the patch tokens, and for every patch token the
    kinds of finding whose box covers it. The Q-Former reads patch tokens, so they must say what is where; the dense
    target also makes a 2-pixel granuloma matter to the patch that holds it, where the mean alone dilutes it 64-fold.
    A ViT from scratch is data-hungry, so each pre-training study is also rendered VISION_RENDERS more times (new
    acquisition, placement and noise). Returns (stats, every render's pixels, every render's caption)."""
    images = images_to_tensor(ds.images[[s.index for s in studies]])
    extra_imgs, extra_labels, extra_captions, extra_drawn = render_variants(studies, image_size, VISION_RENDERS)
    vis_images = torch.cat([images, images_to_tensor(extra_imgs)])
    vis_targets = _multi_hot([s.labels for s in studies] + extra_labels, labels)
    kinds = sorted({d["kind"] for s in studies for d in s.drawn})
    patch = cfg.vision_config.patch_size
    where = patch_targets([s.drawn for s in studies] + extra_drawn, kinds, image_size, patch)
    head = torch.nn.Linear(cfg.vision_config.hidden_size, len(labels))
    patch_head = torch.nn.Linear(cfg.vision_config.hidden_size, len(kinds))
    vision = torch.nn.ModuleDict({"vit": model.vision_model, "head": head, "patch_head": patch_head})

    def vision_loss(m, b):
        tokens = m["vit"](pixel_values=vis_images[b]).last_hidden_state[:, 1:]
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        return bce(m["head"](tokens.mean(1)), vis_targets[b]) + bce(m["patch_head"](tokens), where[b])

    v = train(vision, list(range(len(vis_images))), torch.tensor, vision_loss,
              TrainConfig(num_epochs=VISION_EPOCHS, lr=3e-3, batch_size=64, warmup_ratio=0.1, weight_decay=0.05, seed=seed,
                          desc="zoo: vision encoder"))

    def findings_logits(px):  # the multi-label head on the mean patch token, in chunks
        with torch.no_grad():
            return torch.cat([head(model.vision_model(pixel_values=px[i:i + 128]).last_hidden_state[:, 1:].mean(1))
                              for i in range(0, len(px), 128)])

    vision_f1 = _micro_f1(findings_logits(images) > 0, _multi_hot([s.labels for s in studies], labels) > 0)
    val = ds.split("val")
    val_auc = _mean_auc(_multi_hot([s.labels for s in val], labels),
                        findings_logits(images_to_tensor(ds.images[[s.index for s in val]])))
    stats = {"epochs": VISION_EPOCHS, "images": len(vis_images), "final_loss": v["loss_curve"][-1][1], "train_micro_f1": vision_f1,
             "val_mean_auc": val_auc, "labels": labels, "patch_kinds": kinds}
    return stats, vis_images, [caption(s.drawn) for s in studies] + extra_captions


def _language_stage(lm, studies, labels: list[str], tok, seed: int) -> dict:
    """(3) OPT as a language model on the report text. A real OPT has read question-answer text; the tiny one reads
    the pre-training split's questions too (text only, no image), so fine-tuning teaches the image, not the format."""
    qa_rng = np.random.default_rng(seed)
    texts = [s.report_clean for s in studies]
    for s in studies:  # three question-answer texts per study keep the stage within its time budget
        qa = vqa_pairs(s, labels, qa_rng)
        texts += [PROMPT.format(question=qa[j]["question"]) + " " + qa[j]["answer"]
                  for j in qa_rng.permutation(len(qa))[:LM_QA_PER_STUDY]]
    reports = [tok(t + tok.eos_token, truncation=True, max_length=96)["input_ids"] for t in texts]
    reports = [[tok.bos_token_id] + r for r in reports if r]
    t = train(lm, reports, lambda b: pad_right(b, tok.pad_token_id), lm_text_loss(tok.pad_token_id),
              TrainConfig(num_epochs=LM_EPOCHS, lr=2e-3, batch_size=32, seed=seed, desc="zoo: OPT language model"))
    return {"epochs": LM_EPOCHS, "texts": len(reports), "final_loss": t["loss_curve"][-1][1]}


def _alignment_stage(model, cfg, tok, vis_images: torch.Tensor, captions: list[str], seed: int) -> dict:
    """(4) Q-Former + projection aligned on image -> caption, ViT and OPT frozen: aligned, as BLIP-2's Q-Former, on
    captions; here a caption says what is drawn and where."""
    model.requires_grad_(False)
    model.query_tokens.requires_grad_(True)
    model.qformer.requires_grad_(True)
    model.language_projection.requires_grad_(True)
    with torch.no_grad():
        feats = torch.cat([model.vision_model(pixel_values=vis_images[i:i + 128]).last_hidden_state
                           for i in range(0, len(vis_images), 128)])
    pairs = [(i, [tok.bos_token_id] + tok(c + tok.eos_token, truncation=True, max_length=64)["input_ids"])
             for i, c in enumerate(captions)]
    q = cfg.num_query_tokens
    image_id = cfg.image_token_id

    def collate_cap(b):
        n = max(len(x) for _, x in b)
        ids = torch.full((len(b), q + n), tok.pad_token_id)
        ids[:, :q] = image_id
        for i, (_, x) in enumerate(b):
            ids[i, q:q + len(x)] = torch.tensor(x)
        labels_ = ids.masked_fill((ids == tok.pad_token_id) | (ids == image_id), -100)
        return {"features": feats[[i for i, _ in b]], "input_ids": ids, "labels": labels_}

    def cap_loss(m, b):
        return medblip.lm_loss(m, b["features"], b["input_ids"], (b["input_ids"] != tok.pad_token_id).long(), b["labels"])

    a = train(model, pairs, collate_cap, cap_loss,
              TrainConfig(num_epochs=ALIGN_EPOCHS, lr=2e-3, batch_size=32, seed=seed, desc="zoo: Q-Former alignment"))
    model.requires_grad_(True)
    return {"epochs": ALIGN_EPOCHS, "captions": len(pairs), "final_loss": a["loss_curve"][-1][1]}


def load_zoo(image_size: int = 128, zoo_seed: int = 0) -> tuple[Path, dict]:
    root = build_medblip_zoo(image_size=image_size, zoo_seed=zoo_seed)
    return root, json.loads((root / "zoo.json").read_text())


