"""MiniGPT-Med's tiny EVA ViT and LLaMA, beside the BLIP-2 zoo and sharing its tokenizer."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from medlib import fileio
from medlib.data.synthcxr import build, grounding_samples, vqa_pairs
from medlib.models import minigpt_med
from medlib.models.common import images_to_tensor, load_tokenizer
from medlib.paths import fingerprint
from medlib.seeding import pin_threads
from medlib.train import TrainConfig, train
from medlib.zoo import (
    VISION_RENDERS,
    ZOO_SEED,
    ZOO_THREADS,
    _multi_hot,
    lm_text_loss,
    pad_right,
    patch_targets,
    render_variants,
)
from medlib.zoo.medblip import build_medblip_zoo

MINIGPT_ZOO_VERSION = "2"  # 2: EVA also learns, per patch token, which kinds of finding cover it
EVA_EPOCHS = 12
LLAMA_EPOCHS = 4


def build_minigpt_zoo(force: bool = False, image_size: int = 128, progress: bool = True) -> Path:
    """The tiny EVA ViT (multi-label findings on the pre-training renders) and tiny LLaMA (language
    model on reports, question-answer text and grounding answers of the pre-training split), beside
    the BLIP-2 zoo and sharing its tokenizer."""
    # imported here: heavy (about 2 s to import): only where a model is built
    import timm  # noqa: F401  (the EVA class lives in timm)
    from transformers import LlamaForCausalLM

    base = build_medblip_zoo(image_size=image_size, progress=progress)
    ds = build(image_size=image_size, progress=progress)
    root = base / f"minigpt_med_{fingerprint(MINIGPT_ZOO_VERSION, EVA_EPOCHS, LLAMA_EPOCHS)}"
    if (root / "zoo.json").exists() and not force:
        return root
    torch.manual_seed(ZOO_SEED)
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
    extra_imgs, extra_labels, _, extra_drawn = render_variants(pre, image_size, VISION_RENDERS)
    images = torch.cat([images_to_tensor(ds.images[[s.index for s in pre]]), images_to_tensor(extra_imgs)])
    targets = _multi_hot([s.labels for s in pre] + extra_labels, labels)
    vit = minigpt_med.vit_tiny(image_size)
    kinds = sorted({d["kind"] for s in pre for d in s.drawn})
    where = patch_targets([s.drawn for s in pre] + extra_drawn, kinds, image_size, vit.patch_embed.patch_size[0])
    head, patch_head = torch.nn.Linear(vit.embed_dim, len(labels)), torch.nn.Linear(vit.embed_dim, len(kinds))
    mod = torch.nn.ModuleDict({"vit": vit, "head": head, "patch_head": patch_head})

    def vit_loss(m, b):
        tokens = m["vit"].forward_features(images[b])[:, m["vit"].num_prefix_tokens:]  # (B, patches, width)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        return bce(m["head"](tokens.mean(1)), targets[b]) + bce(m["patch_head"](tokens), where[b])

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
                      f"- EVA ViT (timm `Eva`, 3 blocks, width 64, patch 16): multi-label findings (mean patch token) and the kinds of "
                      f"finding under each patch token, on {len(images)} renders of the pre-training split, {EVA_EPOCHS} epochs, final BCE {card['eva']['final_loss']:.3f}.\n"
                      f"- LLaMA (4 layers, width 64): language model on {len(ids)} report, question and grounding texts of the "
                      f"pre-training split, {LLAMA_EPOCHS} epochs, final loss {card['llama']['final_loss']:.3f}.\n"
                      f"- Built in {card['build_seconds']} s. Tokenizer: the BLIP-2 zoo's.\n")
    fileio.write_json(root / "zoo.json", card)
    return root


