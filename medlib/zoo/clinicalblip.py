"""ClinicalBLIP's tiny InstructBLIP: the BLIP-2 ViT and the MiniGPT-Med LLaMA, with a Q-Former that reads the instruction."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import Blip2ForConditionalGeneration, LlamaForCausalLM

from medlib import fileio
from medlib.data.synthcxr import build
from medlib.models import clinicalblip
from medlib.models.common import count_parameters, images_to_tensor, load_tokenizer
from medlib.paths import fingerprint
from medlib.seeding import keeps_process_state, pin_threads
from medlib.train import TrainConfig, train
from medlib.zoo import (
    VISION_RENDERS,
    ZOO_SEED,
    ZOO_THREADS,
    announce,
    caption,
    render_variants,
    writable,
)
from medlib.zoo.medblip import build_medblip_zoo
from medlib.zoo.minigpt_med import build_minigpt_zoo

CLINICALBLIP_ZOO_VERSION = "1"
CLINICALBLIP_ALIGN_EPOCHS = 3
CAPTION_INSTRUCTION = "Describe what is drawn and where."


@keeps_process_state
def build_clinicalblip_zoo(force: bool = False, image_size: int = 128, progress: bool = True, zoo_seed: int = 0) -> Path:
    """A tiny InstructBLIP assembled as the real one was: a pre-trained ViT (the BLIP-2 zoo's), a
    pre-trained LLaMA (the MiniGPT-Med zoo's, standing in for Vicuna) and an instruction-aware
    Q-Former + projection aligned on image -> caption with both frozen. It has never seen a
    report written for an image, so its zero-shot reports are what InstructBLIP's would be: captions. `zoo_seed`
    k > 0: another build (seed ZOO_SEED + k) from the BLIP-2 and MiniGPT-Med zoos' builds k."""
    base = build_medblip_zoo(image_size=image_size, progress=progress, zoo_seed=zoo_seed)
    mg = build_minigpt_zoo(image_size=image_size, progress=progress, later_stages=False, zoo_seed=zoo_seed)  # its LLaMA only
    ds = build(image_size=image_size, progress=progress)
    root = base / f"clinicalblip_{fingerprint(CLINICALBLIP_ZOO_VERSION, mg.name, CLINICALBLIP_ALIGN_EPOCHS)}"
    if (root / "zoo.json").exists() and not force:
        return root
    announce("the tiny ClinicalBLIP zoo (InstructBLIP)" + (f" (build {zoo_seed})" if zoo_seed else ""), 1.3)
    writable(root, "ClinicalBLIP's InstructBLIP")
    torch.manual_seed(ZOO_SEED + zoo_seed)
    pin_threads(ZOO_THREADS)  # one thread count for every zoo build, so a rebuild gives the same weights (medlib.seeding)
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
