"""The tiny model zoo: what "pre-trained and frozen" means on a laptop.

Built once from SynthCXR-IU's *pre-training* split (disjoint from train/val/test) and cached
under a fingerprint:
1. a byte-level BPE tokenizer trained on the report text;
2. the BLIP-2 vision encoder, pre-trained to recognise the drawn findings (multi-label) and to
   tell, patch by patch, which kind of finding lies there;
3. a 32-layer OPT, pre-trained as a language model on report text and question-answer text;
4. the Q-Former and projection, pre-aligned on image -> caption with 2 and 3 frozen,
so that MedBLIP's zero-shot arm is a real BLIP-2, not noise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from medlib import fileio
from medlib.data.iu_xray import parse_tag
from medlib.data.render import render_study
from medlib.data.synthcxr import build, grounding_samples, location_phrase, lung_shapes, rsna_boxes, vqa_pairs
from medlib.models import clinicalblip, medblip, minigpt_med
from medlib.models.common import count_parameters, images_to_tensor, load_tokenizer, train_tokenizer
from medlib.models.medblip import PROMPT
from medlib.paths import cache_root, fingerprint
from medlib.train import TrainConfig, train

ZOO_VERSION = "4"
ZOO_SEED = 1234
VISION_RENDERS = 4   # extra renders of each pre-training study for the vision encoder
VISION_EPOCHS = 30  # at 12 the ViT underfits its own training images (AUC 0.73); at 30, 0.89
LM_EPOCHS = 3
LM_QA_PER_STUDY = 3
ALIGN_EPOCHS = 3


def zoo_dir(dataset_fp: str) -> Path:
    return cache_root() / "zoo" / fingerprint(ZOO_VERSION, dataset_fp, ZOO_SEED)


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


def build_zoo(force: bool = False, image_size: int = 128, progress: bool = True) -> Path:
    """Build (or find) the tiny zoo; returns its folder. Minutes on 2 CPU cores."""

    ds = build(image_size=image_size, progress=progress)
    root = zoo_dir(ds.fingerprint)
    if (root / "zoo.json").exists() and not force:
        return root
    torch.manual_seed(ZOO_SEED)
    started = time.time()
    pre = ds.split("pretrain")
    root.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(pre, root / "tokenizer")
    card = {"dataset_fingerprint": ds.fingerprint, "pretrain_studies": len(pre), "version": ZOO_VERSION}
    model, stats = pretrain_medblip(ds, pre, tok, image_size, progress)
    model.save_pretrained(str(root / "medblip"))
    card["medblip"] = stats
    card["build_seconds"] = round(time.time() - started, 1)
    fileio.write_text(root / "MODEL_CARD.md", model_card(card))
    fileio.write_json(root / "zoo.json", card)  # last: marks a complete build
    return root


def pretrain_medblip(ds, studies, tok, image_size: int, progress: bool = True):
    """Stages 2-4 of the module docstring for the BLIP-2 (OPT) tiny model."""
    cfg = medblip.tiny_config(len(tok), image_size, tok.convert_tokens_to_ids("<image>"), tok.pad_token_id,
                              tok.bos_token_id, tok.eos_token_id)
    model = medblip.build(cfg)
    labels = sorted({lab for s in studies for lab in s.labels})
    images = images_to_tensor(ds.images[[s.index for s in studies]])

    # (2) vision encoder: multi-label findings from the mean of the patch tokens, and for every
    # patch token the kinds of finding whose box covers it. The Q-Former reads patch tokens, so
    # they must say what is where; the dense target also makes a 2-pixel granuloma matter to
    # the patch that holds it, where the mean alone dilutes it 64-fold.
    # A ViT from scratch is data-hungry, so each pre-training study is also rendered
    # VISION_RENDERS more times (new acquisition, placement and noise).
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
              TrainConfig(num_epochs=VISION_EPOCHS, lr=3e-3, batch_size=64, warmup_ratio=0.1, weight_decay=0.05,
                          desc="zoo: vision encoder"))
    def findings_logits(px):  # the multi-label head on the mean patch token, in chunks
        with torch.no_grad():
            return torch.cat([head(model.vision_model(pixel_values=px[i:i + 128]).last_hidden_state[:, 1:].mean(1))
                              for i in range(0, len(px), 128)])

    vision_f1 = _micro_f1(findings_logits(images) > 0, _multi_hot([s.labels for s in studies], labels) > 0)
    val = ds.split("val")
    val_auc = _mean_auc(_multi_hot([s.labels for s in val], labels),
                        findings_logits(images_to_tensor(ds.images[[s.index for s in val]])))

    # (3) OPT as a language model on the report text.
    # A real OPT has read question-answer text; the tiny one reads the pre-training split's
    # questions too (text only, no image), so fine-tuning teaches the image, not the format.
    lm = model.language_model
    qa_rng = np.random.default_rng(ZOO_SEED)
    texts = [s.report_clean for s in studies]
    for s in studies:  # three question-answer texts per study keep the stage within its time budget
        qa = vqa_pairs(s, labels, qa_rng)
        texts += [PROMPT.format(question=qa[j]["question"]) + " " + qa[j]["answer"]
                  for j in qa_rng.permutation(len(qa))[:LM_QA_PER_STUDY]]
    reports = [tok(t + tok.eos_token, truncation=True, max_length=96)["input_ids"] for t in texts]
    reports = [[tok.bos_token_id] + r for r in reports if r]

    t = train(lm, reports, lambda b: pad_right(b, tok.pad_token_id), lm_text_loss(tok.pad_token_id), TrainConfig(num_epochs=LM_EPOCHS, lr=2e-3, batch_size=32, desc="zoo: OPT language model"))

    # (4) Q-Former + projection aligned on image -> report, ViT and OPT frozen.
    model.requires_grad_(False)
    model.query_tokens.requires_grad_(True)
    model.qformer.requires_grad_(True)
    model.language_projection.requires_grad_(True)
    # Aligned, as BLIP-2's Q-Former, on captions: here a caption says what is drawn and where.
    with torch.no_grad():
        feats = torch.cat([model.vision_model(pixel_values=vis_images[i:i + 128]).last_hidden_state
                           for i in range(0, len(vis_images), 128)])
    captions = [caption(s.drawn) for s in studies] + extra_captions
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

    a = train(model, pairs, collate_cap, cap_loss, TrainConfig(num_epochs=ALIGN_EPOCHS, lr=2e-3, batch_size=32, desc="zoo: Q-Former alignment"))
    model.requires_grad_(True)
    stats = {"vision_pretrain": {"epochs": VISION_EPOCHS, "images": len(vis_images), "final_loss": v["loss_curve"][-1][1], "train_micro_f1": vision_f1,
                                 "val_mean_auc": val_auc, "labels": labels, "patch_kinds": kinds},
             "opt_lm_pretrain": {"epochs": LM_EPOCHS, "texts": len(reports), "final_loss": t["loss_curve"][-1][1]},
             "qformer_alignment": {"epochs": ALIGN_EPOCHS, "captions": len(pairs), "final_loss": a["loss_curve"][-1][1]},
             **count_parameters(model)}
    return model, stats


def pad_right(batch: list[list[int]], pad_id: int) -> torch.Tensor:
    """Token id lists -> (B, T) right-padded."""
    out = torch.full((len(batch), max(len(x) for x in batch)), pad_id)
    for i, x in enumerate(batch):
        out[i, :len(x)] = torch.tensor(x)
    return out


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


def load_zoo(image_size: int = 128) -> tuple[Path, dict]:
    root = build_zoo(image_size=image_size)
    return root, json.loads((root / "zoo.json").read_text())


# -- MiniGPT-Med's tiny models: EVA ViT and LLaMA ------------------------------------------------

MINIGPT_ZOO_VERSION = "1"
EVA_EPOCHS = 12
LLAMA_EPOCHS = 4


def build_minigpt_zoo(force: bool = False, image_size: int = 128, progress: bool = True) -> Path:
    """The tiny EVA ViT (multi-label findings on the pre-training renders) and tiny LLaMA (language
    model on reports, question-answer text and grounding answers of the pre-training split), beside
    the BLIP-2 zoo and sharing its tokenizer."""
    import timm  # noqa: F401  (the EVA class lives in timm)
    from transformers import LlamaForCausalLM

    base = build_zoo(image_size=image_size, progress=progress)
    ds = build(image_size=image_size, progress=progress)
    root = base / f"minigpt_med_{fingerprint(MINIGPT_ZOO_VERSION, EVA_EPOCHS, LLAMA_EPOCHS)}"
    if (root / "zoo.json").exists() and not force:
        return root
    torch.manual_seed(ZOO_SEED)
    started = time.time()
    pre = ds.split("pretrain")
    tok = load_tokenizer(base / "tokenizer")
    labels = sorted({lab for s in pre for lab in s.labels})

    # EVA ViT: multi-label findings from the mean patch token, on the same renders as the BLIP ViT.
    extra_imgs, extra_labels, _, _ = render_variants(pre, image_size, VISION_RENDERS)
    images = torch.cat([images_to_tensor(ds.images[[s.index for s in pre]]), images_to_tensor(extra_imgs)])
    targets = _multi_hot([s.labels for s in pre] + extra_labels, labels)
    vit = minigpt_med.vit_tiny(image_size)
    head = torch.nn.Linear(vit.embed_dim, len(labels))
    mod = torch.nn.ModuleDict({"vit": vit, "head": head})

    def vit_loss(m, b):
        feats = m["vit"].forward_features(images[b])[:, m["vit"].num_prefix_tokens:].mean(1)
        return torch.nn.functional.binary_cross_entropy_with_logits(m["head"](feats), targets[b])

    v = train(mod, list(range(len(images))), torch.tensor, vit_loss,
              TrainConfig(num_epochs=EVA_EPOCHS, lr=3e-3, batch_size=64, warmup_ratio=0.1, weight_decay=0.05, desc="zoo: EVA ViT"))

    # LLaMA: reports, questions and grounding answers (text only).
    rng = np.random.default_rng(ZOO_SEED)
    texts = [s.report_clean for s in pre]
    for s in pre:
        qa = vqa_pairs(s, labels, rng)
        texts += [f"{q['question']} {q['answer']}" for q in qa[:3]]
        texts += [f"{g['instruction']} {g['answer']}" for g in grounding_samples(s, image_size)]
    ids = [[tok.bos_token_id] + tok(t + tok.eos_token, truncation=True, max_length=96)["input_ids"] for t in texts]
    llm = LlamaForCausalLM(minigpt_med.llama_tiny_config(len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id))

    t = train(llm, ids, lambda b: pad_right(b, tok.pad_token_id), lm_text_loss(tok.pad_token_id), TrainConfig(num_epochs=LLAMA_EPOCHS, lr=3e-3, batch_size=32, desc="zoo: LLaMA"))
    root.mkdir(parents=True, exist_ok=True)
    fileio.write_with(root / "eva.pt", lambda p: torch.save(vit.state_dict(), p))
    llm.save_pretrained(str(root / "llama"))
    card = {"eva": {"epochs": EVA_EPOCHS, "images": len(images), "final_loss": v["loss_curve"][-1][1]},
            "llama": {"epochs": LLAMA_EPOCHS, "texts": len(ids), "final_loss": t["loss_curve"][-1][1]},
            "build_seconds": round(time.time() - started, 1)}
    fileio.write_text(root / "MODEL_CARD.md",
                      "# Tiny zoo — MiniGPT-Med models\n\n"
                      f"- EVA ViT (timm `Eva`, 3 blocks, width 64, patch 16): multi-label findings on {len(images)} renders of the "
                      f"pre-training split, {EVA_EPOCHS} epochs, final BCE {card['eva']['final_loss']:.3f}.\n"
                      f"- LLaMA (4 layers, width 64): language model on {len(ids)} report, question and grounding texts of the "
                      f"pre-training split, {LLAMA_EPOCHS} epochs, final loss {card['llama']['final_loss']:.3f}.\n"
                      f"- Built in {card['build_seconds']} s. Tokenizer: the BLIP-2 zoo's.\n")
    fileio.write_json(root / "zoo.json", card)
    return root


# -- ClinicalBLIP's tiny InstructBLIP ---------------------------------------------------------

CLINICALBLIP_ZOO_VERSION = "1"
CLINICALBLIP_ALIGN_EPOCHS = 3
CAPTION_INSTRUCTION = "Describe what is drawn and where."


def build_clinicalblip_zoo(force: bool = False, image_size: int = 128, progress: bool = True) -> Path:
    """A tiny InstructBLIP assembled as the real one was: a pre-trained ViT (the BLIP-2 zoo's), a
    pre-trained LLaMA (the MiniGPT-Med zoo's, standing in for Vicuna) and an instruction-aware
    Q-Former + projection aligned on image -> caption with both frozen. It has never seen a
    report written for an image, so its zero-shot reports are what InstructBLIP's would be: captions."""
    from transformers import Blip2ForConditionalGeneration, LlamaForCausalLM

    base = build_zoo(image_size=image_size, progress=progress)
    mg = build_minigpt_zoo(image_size=image_size, progress=progress)
    ds = build(image_size=image_size, progress=progress)
    root = base / f"clinicalblip_{fingerprint(CLINICALBLIP_ZOO_VERSION, mg.name, CLINICALBLIP_ALIGN_EPOCHS)}"
    if (root / "zoo.json").exists() and not force:
        return root
    torch.manual_seed(ZOO_SEED)
    started = time.time()
    pre = ds.split("pretrain")
    tok = load_tokenizer(base / "tokenizer")
    image_id = tok.convert_tokens_to_ids("<image>")
    cfg = clinicalblip.tiny_config(len(tok), image_size, image_id, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    model = clinicalblip.build(cfg)
    # The BLIP-2 and InstructBLIP vision towers share their layout, parameter for parameter.
    model.vision_model.load_state_dict(Blip2ForConditionalGeneration.from_pretrained(str(base / "medblip")).vision_model.state_dict())
    model.language_model.load_state_dict(LlamaForCausalLM.from_pretrained(str(mg / "llama")).state_dict())

    extra_imgs, _, extra_captions, _ = render_variants(pre, image_size, VISION_RENDERS)
    images = torch.cat([images_to_tensor(ds.images[[s.index for s in pre]]), images_to_tensor(extra_imgs)])
    captions = [caption(s.drawn) for s in pre] + extra_captions
    q = cfg.num_query_tokens
    prompt = [image_id] * q + [tok.bos_token_id] + tok(CAPTION_INSTRUCTION, add_special_tokens=False)["input_ids"]
    qformer = tok(CAPTION_INSTRUCTION, return_tensors="pt")["input_ids"]
    pairs = [(i, tok(" " + c + tok.eos_token, add_special_tokens=False, truncation=True, max_length=64)["input_ids"])
             for i, c in enumerate(captions)]

    def collate_cap(b):
        n = len(prompt) + max(len(x) for _, x in b)
        ids = torch.full((len(b), n), tok.pad_token_id)
        labels = torch.full((len(b), n), -100)
        mask = torch.zeros((len(b), n), dtype=torch.long)
        for i, (_, x) in enumerate(b):
            ids[i, :len(prompt) + len(x)] = torch.tensor(prompt + x)
            labels[i, len(prompt):len(prompt) + len(x)] = torch.tensor(x)
            mask[i, :len(prompt) + len(x)] = 1
        return {"pixel_values": images[[i for i, _ in b]], "input_ids": ids, "attention_mask": mask, "labels": labels,
                "qformer_input_ids": qformer.expand(len(b), -1)}

    model.requires_grad_(False)
    for part in (model.qformer, model.query_tokens, model.language_projection):
        part.requires_grad_(True)
    a = train(model, pairs, collate_cap, lambda m, b: m(**b).loss,
              TrainConfig(num_epochs=CLINICALBLIP_ALIGN_EPOCHS, lr=2e-3, batch_size=32, desc="zoo: InstructBLIP Q-Former alignment"))
    model.requires_grad_(True)
    model.save_pretrained(str(root / "instructblip"))
    card = {"alignment": {"epochs": CLINICALBLIP_ALIGN_EPOCHS, "captions": len(pairs), "final_loss": a["loss_curve"][-1][1],
                          "instruction": CAPTION_INSTRUCTION},
            "vision_from": "medblip", "llm_from": mg.name + "/llama", **count_parameters(model),
            "build_seconds": round(time.time() - started, 1)}
    fileio.write_text(root / "MODEL_CARD.md",
                      "# Tiny zoo — ClinicalBLIP's InstructBLIP\n\n"
                      "- Vision encoder: the BLIP-2 zoo's ViT (multi-label findings pre-training), copied unchanged.\n"
                      "- LLM: the MiniGPT-Med zoo's tiny LLaMA (language model on report text), in Vicuna's place.\n"
                      f"- Q-Former (instruction-aware) + projection: image -> caption on {len(pairs)} renders of the pre-training split, "
                      f"instruction \"{CAPTION_INSTRUCTION}\", ViT and LLM frozen, {CLINICALBLIP_ALIGN_EPOCHS} epochs, final loss "
                      f"{card['alignment']['final_loss']:.3f}.\n"
                      f"- Parameters: {card['total_params']:,}. Built in {card['build_seconds']} s.\n"
                      "- It has not seen a report paired with an image: the zero-shot arm writes captions, as InstructBLIP would.\n")
    fileio.write_json(root / "zoo.json", card)
    return root
