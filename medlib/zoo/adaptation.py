"""Notebook 04's shared backbone: the BLIP-2 zoo with its OPT also taught the box grammar, text only.

The BLIP-2 zoo's OPT read reports and questions but never a box written as text (notebook 01 asks none), so
every recipe's grounding answer was a report sentence: grounding scored 0 for every arm and the comparison could
say nothing. MiniGPT-Med's backbone, MiniGPT-v2, had read grounding text before its medical fine-tuning; here the
shared OPT reads the pre-training split's `[detection]` answers (with its reports, so it keeps them) before any
recipe starts, the same weights for all three, and the training split stays the recipes' alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from medlib import fileio
from medlib.data.synthcxr import build, grounding_samples
from medlib.models import medblip
from medlib.models.common import load_tokenizer
from medlib.models.medblip import PROMPT
from medlib.paths import fingerprint
from medlib.seeding import keeps_process_state, pin_threads
from medlib.train import TrainConfig, train
from medlib.zoo import ZOO_SEED, ZOO_THREADS, announce, lm_text_loss, pad_right, writable
from medlib.zoo.medblip import build_medblip_zoo

ADAPTATION_ZOO_VERSION = "1"
# At 2 epochs and 1e-3 the greedy answer after "{<" is "><" (no coordinate is likely enough) and every recipe's
# grounding still scores 0; at 8 epochs and the zoo's language-model rate, the OPT alone writes well-formed boxes.
BOX_TEXT_EPOCHS = 8
BOX_TEXT_LR = 2e-3


def box_texts(studies, image_size: int) -> list[str]:
    """The warm-up's text: each study's report and its `[detection]` questions with their box answers, in the
    prompt the recipes are trained with (no image tokens: this is the language model alone)."""
    texts = []
    for s in studies:
        if s.report_clean:
            texts.append(s.report_clean)
        texts += [PROMPT.format(question=g["instruction"]) + " " + g["answer"]
                  for g in grounding_samples(s, image_size) if g["task"] == "detection"]
    return texts


@keeps_process_state
def build_adaptation_zoo(force: bool = False, image_size: int = 128, progress: bool = True, zoo_seed: int = 0) -> Path:
    """The BLIP-2 zoo's model with its OPT trained further on `box_texts` of the pre-training split; cached
    beside the BLIP-2 zoo (its tokenizer is that zoo's). `zoo_seed` k > 0: built on BLIP-2 zoo build k, with
    seed ZOO_SEED + k (build 0 is the shipped one)."""
    base = build_medblip_zoo(image_size=image_size, progress=progress, zoo_seed=zoo_seed)
    root = base / f"adaptation_{fingerprint(ADAPTATION_ZOO_VERSION, BOX_TEXT_EPOCHS, BOX_TEXT_LR)}"
    if (root / "zoo.json").exists() and not force:
        return root
    announce("notebook 04's shared backbone (BLIP-2, its OPT taught box text)" + (f" (build {zoo_seed})" if zoo_seed else ""), 2.2)
    writable(root, "notebook 04's backbone")
    seed = ZOO_SEED + zoo_seed
    torch.manual_seed(seed)
    pin_threads(ZOO_THREADS)  # one thread count for every zoo build, so a rebuild gives the same weights (medlib.seeding)
    started = time.time()
    ds = build(image_size=image_size, progress=progress)
    tok = load_tokenizer(base / "tokenizer")
    model = medblip.Blip2ForConditionalGeneration.from_pretrained(str(base / "medblip"))
    texts = box_texts(ds.split("pretrain"), image_size)
    ids = [[tok.bos_token_id] + tok(t + tok.eos_token, truncation=True, max_length=96)["input_ids"] for t in texts]
    t = train(model.language_model, ids, lambda b: pad_right(b, tok.pad_token_id), lm_text_loss(tok.pad_token_id),
              TrainConfig(num_epochs=BOX_TEXT_EPOCHS, lr=BOX_TEXT_LR, batch_size=32, seed=seed,
                          desc="zoo: OPT on box text"))
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(root / "medblip"))
    card = {"base": base.name, **({"zoo_seed": zoo_seed} if zoo_seed else {}), "texts": len(ids), "epochs": BOX_TEXT_EPOCHS, "lr": BOX_TEXT_LR,
            "final_loss": t["loss_curve"][-1][1], "build_seconds": round(time.time() - started, 1)}
    fileio.write_text(root / "MODEL_CARD.md",
                      "# Tiny zoo — notebook 04's shared backbone\n\n"
                      f"- The BLIP-2 zoo's model ({base.name}) with its OPT trained {BOX_TEXT_EPOCHS} more epochs as a language "
                      f"model on {len(ids)} texts of the pre-training split: reports and `[detection]` questions with their "
                      f"box answers, final loss {card['final_loss']:.3f}; ViT and Q-Former unchanged.\n"
                      f"- Built in {card['build_seconds']} s. Tokenizer: the BLIP-2 zoo's.\n")
    fileio.write_text(root / "zoo.json", json.dumps(card, indent=1))  # last: its presence marks a complete build
    return root


def load_adaptation_zoo(image_size: int = 128, zoo_seed: int = 0) -> tuple[Path, Path]:
    """(the shared backbone's folder, the BLIP-2 zoo's folder holding the tokenizer)."""
    root = build_adaptation_zoo(image_size=image_size, zoo_seed=zoo_seed)
    return root, root.parent
