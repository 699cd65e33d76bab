"""What the three models share: the tiny tokenizer, parameter counts, image tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
IMAGE_TOKEN = "<image>"          # BLIP-2 / InstructBLIP: one per query token, replaced by image embeddings
IMAGE_HERE = "<ImageHere>"       # MiniGPT-Med's placeholder
# A checkpoint value on the paper profile: the paper's architecture at full size with random weights and
# medlib's local tokenizer, nothing downloaded. For checking that the paper path runs on a GPU (memory,
# dtypes, shapes), never for numbers.
RANDOM_WEIGHTS = "random"


def train_tokenizer(texts: list[str], vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on report text (it decodes back to the exact text,
    so box strings such as `{<12><30><45><71>}` survive the round trip)."""
    # imported here: only where a tokenizer is trained (transformers: about 2 s to import)
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = list(SPECIAL_TOKENS.values()) + [IMAGE_TOKEN, IMAGE_HERE]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS,
                                   additional_special_tokens=[IMAGE_TOKEN, IMAGE_HERE])
    fast.model_max_length = 512
    return fast


def load_tokenizer(path: str | Path):
    # imported here: heavy (about 2 s to import): only where a model is built
    from transformers import AutoTokenizer

    path = Path(path)
    if path.exists() and not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
        raise FileNotFoundError(f"{path}: no tokenizer files (tokenizer.json / tokenizer_config.json) in this folder")
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def blip_image_processor(size: int = 224):
    """BLIP-2 / InstructBLIP's image processor as their checkpoints ship it (224 px, bicubic, CLIP
    statistics), built locally for random-weight runs."""
    # imported here: heavy (about 2 s to import): only where a model is built
    from transformers import BlipImageProcessor
    from transformers.image_utils import (
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
    )

    return BlipImageProcessor(size={"height": size, "width": size}, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)


def with_tokenizer_ids(text_config, tok):
    """A paper-size text config whose special-token ids are those of medlib's local tokenizer (its
    2,000 ids lie inside every paper vocabulary; random weights make any id as good as another)."""
    text_config.pad_token_id, text_config.bos_token_id, text_config.eos_token_id = tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    return text_config


def build_random(cls, config, dtype=torch.float32):
    """`cls(config)` initialised directly on the GPU when there is one (a 7B model initialised on a CPU
    takes minutes) and in `dtype`."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            return cls(config)
    finally:
        torch.set_default_dtype(previous)


def frozen_to_bf16(model: torch.nn.Module, keep: tuple = ()) -> torch.nn.Module:
    """On a GPU: frozen weights in bf16 (half the memory and bandwidth of fp32; they never see an
    optimizer), trainable weights kept in fp32 for AdamW; bf16 autocast runs the matmuls of both.
    Submodules in `keep` stay as they are."""
    kept = {id(p) for m in keep for p in m.parameters()}
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point() and id(p) not in kept:
            p.data = p.data.to(torch.bfloat16)
    return model


def mixed_precision(model: torch.nn.Module):
    """bf16 autocast where the model mixes dtypes (`frozen_to_bf16`: frozen bf16, trainable fp32), so
    inference outside the training loop runs the same mixed layers; a no-op for a one-dtype model."""
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=len(dtypes) > 1)


def pad_sequences(rows, value, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Stack sequences of different lengths (lists of ids, or tensors of shape (L, ...)) into one
    (B, N, ...) tensor filled with `value`, and the (B, N) attention mask. "right" padding for training;
    "left" for generation, so that every prompt ends where the new tokens begin."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be left or right, got {side!r}")
    rows = [r if isinstance(r, torch.Tensor) else torch.tensor(r, dtype=torch.long) for r in rows]
    n = max(r.shape[0] for r in rows)
    out = rows[0].new_full((len(rows), n, *rows[0].shape[1:]), value)
    mask = torch.zeros((len(rows), n), dtype=torch.long, device=rows[0].device)
    for i, r in enumerate(rows):
        span = slice(0, len(r)) if side == "right" else slice(n - len(r), n)
        out[i, span], mask[i, span] = r, 1
    return out, mask


def answer_tokens(labels: torch.Tensor) -> int:
    """How many next-token targets a causal-LM loss averages over (labels shifted by one, -100 ignored)."""
    return int((labels[:, 1:] != -100).sum())


def count_parameters(module: torch.nn.Module) -> dict:
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"trainable_params": int(trainable), "total_params": int(total),
            "trainable_share": float(trainable / total) if total else 0.0}


def images_to_tensor(images: np.ndarray, mean=0.5, std=0.25) -> torch.Tensor:
    """(N, H, W) uint8 grey radiographs -> (N, 3, H, W) float, normalised by `mean` / `std` (one value,
    or one per channel); the HF vision towers take three channels, so the grey value is repeated."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0).unsqueeze(1).expand(-1, 3, -1, -1)
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    return ((x - mean) / std).contiguous()
