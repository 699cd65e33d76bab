"""MedBLIP (Gong et al., CMIG 2025): BLIP-2 (OPT) with the image encoder frozen and a share of
OPT's fully connected layers unfrozen.

Everything is frozen, then MedBLIP's code unfreezes (i) the Q-Former's `query_tokens` and the
query-branch feed-forward of every Q-Former layer (`intermediate_query`, `output_query`, with its
LayerNorm) and (ii) `fc1` / `fc2` (weight and bias) of the OPT decoder layers chosen by the ratio,
taken symmetrically from both ends of the stack (see `unfrozen_layers`). Attention, embeddings,
OPT's LayerNorms, the ViT and `language_projection` stay frozen.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    OPTConfig,
)

from medlib.models.common import count_parameters

PAPER_CHECKPOINT = "Salesforce/blip2-opt-2.7b"
PROMPT = "Question:{question} Answer:"   # MedBLIP's prompt, answer tokens follow


def unfrozen_layers(ratio: float, num_layers: int) -> list[int]:
    """Indices of the OPT decoder layers whose `fc1`/`fc2` train for an unfreeze `ratio`.

    MedBLIP unfreezes layer i iff `i < a or i > b`, i.e. k = round(ratio * num_layers) layers
    split between the two ends, the first end taking the extra one when k is odd:
    0.25 of 32 -> 0-3 and 28-31; 0.3125 -> 0-4 and 27-31; 0.375 -> 0-5 and 26-31 (OPT-2.7B);
    0.3125 of 16 -> 0-2 and 14-15 (the tiny OPT).
    """
    if not 0.0 <= ratio <= 1.0 or math.isnan(ratio):
        raise ValueError(f"unfreeze_ratio must lie in [0, 1], got {ratio}")
    k = round(ratio * num_layers)
    if not math.isclose(k / num_layers, ratio, abs_tol=1e-9):
        raise ValueError(f"unfreeze_ratio {ratio} is not a whole number of layers out of {num_layers} "
                         f"(steps of {1 / num_layers:g}); nearest: {k / num_layers:g}")
    front = (k + 1) // 2
    back = k - front
    return list(range(front)) + list(range(num_layers - back, num_layers))


def paper_config() -> Blip2Config:
    """BLIP-2 OPT-2.7B's architecture (the checkpoint's config.json, written out so nothing is downloaded)."""
    vision = Blip2VisionConfig(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                               image_size=224, patch_size=14, qkv_bias=True)
    qformer = Blip2QFormerConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                                 cross_attention_frequency=2, encoder_hidden_size=1408, vocab_size=30522)
    text = OPTConfig(vocab_size=50272, hidden_size=2560, num_hidden_layers=32, ffn_dim=10240, num_attention_heads=32,
                     max_position_embeddings=2048, word_embed_proj_dim=2560, do_layer_norm_before=True,
                     bos_token_id=2, eos_token_id=50118, pad_token_id=1)
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                       num_query_tokens=32, image_token_index=50265)


# The tiny OPT's depth: every 6.25 % step of the ablation (0 to 50 %) is one whole layer, as every
# 3.125 % step is in OPT-2.7B's 32; half the depth of 32 halves an arm's time (the LLM is most of it).
TINY_OPT_LAYERS = 16


def tiny_config(vocab_size: int, image_size: int = 128, image_token_id: int | None = None, pad_token_id: int = 0,
                bos_token_id: int = 1, eos_token_id: int = 2, num_layers: int = TINY_OPT_LAYERS) -> Blip2Config:
    """The same architecture, laptop-sized: TINY_OPT_LAYERS OPT decoder layers, so each step of the
    tiny ablation's ratio grid is a whole layer; everything else small."""
    vision = Blip2VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                               image_size=image_size, patch_size=16, qkv_bias=True)
    qformer = Blip2QFormerConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                 cross_attention_frequency=2, encoder_hidden_size=64, vocab_size=vocab_size)
    text = OPTConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=num_layers, ffn_dim=256, num_attention_heads=4,
                     max_position_embeddings=256, word_embed_proj_dim=64, do_layer_norm_before=True,
                     pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, dropout=0.0,
                     attention_dropout=0.0)
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                       num_query_tokens=8, image_token_index=image_token_id)


def build(config: Blip2Config, checkpoint: str | None = None, dtype=None) -> Blip2ForConditionalGeneration:
    """A BLIP-2 model: random weights from `config`, or `checkpoint` (hub name or local folder)."""
    if checkpoint:
        return Blip2ForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype)
    return Blip2ForConditionalGeneration(config)


def decoder_layers(model: Blip2ForConditionalGeneration) -> nn.ModuleList:
    return model.language_model.model.decoder.layers


def keep_decoder_layers(model: Blip2ForConditionalGeneration, num_layers: int) -> None:
    """Keep the first `num_layers` OPT decoder layers (and say so in the config, which is what is saved)."""
    layers = decoder_layers(model)
    if not 0 < num_layers <= len(layers):
        raise ValueError(f"keep_decoder_layers: {num_layers} of {len(layers)} layers")
    model.language_model.model.decoder.layers = layers[:num_layers]
    for config in (model.config.text_config, model.language_model.config):
        config.num_hidden_layers = num_layers


def set_trainable(model: Blip2ForConditionalGeneration, unfreeze_ratio: float, train_conv_stem: bool = True) -> dict:
    """Freeze everything, then unfreeze MedBLIP's set. Returns the layer indices and counts."""
    model.requires_grad_(False)
    model.query_tokens.requires_grad_(True)
    for layer in model.qformer.encoder.layer:
        layer.intermediate_query.requires_grad_(True)
        layer.output_query.requires_grad_(True)   # dense + LayerNorm
    layers = decoder_layers(model)
    chosen = unfrozen_layers(unfreeze_ratio, len(layers))
    for i in chosen:
        layers[i].fc1.requires_grad_(True)
        layers[i].fc2.requires_grad_(True)
    stem = model.vision_model.embeddings.patch_embedding
    if isinstance(stem, HMLPStem) and train_conv_stem:
        stem.requires_grad_(True)
    return {"unfrozen_layers": chosen, "num_decoder_layers": len(layers), **count_parameters(model)}


class HMLPStem(nn.Module):
    """MedBLIP's "multi-layer convolutional image feature extractor": an hMLP stem (stride 16)
    in place of the ViT's patch embedding. BatchNorm running statistics are buffers, so they
    are saved with the model (MedBLIP's released checkpoints lost them)."""

    def __init__(self, embed_dim: int, patch_size: int, in_chans: int = 3):
        super().__init__()
        if patch_size != 16:
            raise ValueError(f"the hMLP stem has stride 16; the vision config has patch_size {patch_size}")
        mid = max(embed_dim // 4, 8)
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, mid, 4, 4), nn.BatchNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, mid, 2, 2), nn.BatchNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, embed_dim, 2, 2), nn.BatchNorm2d(embed_dim),
        )

    @property
    def weight(self) -> torch.Tensor:
        # Blip2VisionEmbeddings reads patch_embedding.weight.dtype to cast its input.
        return self.proj[-2].weight

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(pixel_values)  # (B, C, H/16, W/16), like the patch Conv2d


def add_conv_stem(model: Blip2ForConditionalGeneration) -> None:
    """Swap the patch embedding for the hMLP stem. The 2-D grid (and so the position
    embeddings, which a 14 px patch grid would need interpolated) is kept: the stem has the
    ViT's own stride here, so each position embedding still belongs to its patch."""
    emb = model.vision_model.embeddings
    emb.patch_embedding = HMLPStem(emb.embed_dim, emb.patch_size)  # called as self.patch_embedding(pixel_values)


def image_prefix(model: Blip2ForConditionalGeneration, image_features: torch.Tensor) -> torch.Tensor:
    """ViT features (B, P, Dv) -> Q-Former queries -> LLM-width prefix (B, Q, D_llm)."""
    queries = model.query_tokens.expand(image_features.shape[0], -1, -1)
    mask = torch.ones(image_features.shape[:-1], dtype=torch.long, device=image_features.device)
    out = model.qformer(query_embeds=queries, encoder_hidden_states=image_features, encoder_attention_mask=mask).last_hidden_state
    return model.language_projection(out)


def embed_with_image(model, image_features, input_ids):
    """Token embeddings with the image prefix written over the `<image>` placeholder tokens."""
    embeds = model.get_input_embeddings()(input_ids)
    prefix = image_prefix(model, image_features).to(embeds.dtype)
    mask = (input_ids == model.config.image_token_id).unsqueeze(-1)
    return embeds.masked_scatter(mask, prefix)


def lm_loss(model, image_features, input_ids, attention_mask, labels) -> torch.Tensor:
    """Next-token loss on the labelled (answer) positions only. Logits are computed only where
    there is a label: the full-vocabulary projection of every prompt position is wasted work."""
    embeds = embed_with_image(model, image_features, input_ids)
    hidden = model.language_model.model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
    shift_labels = labels[:, 1:]
    keep = shift_labels != -100
    logits = model.language_model.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), shift_labels[keep])


@torch.no_grad()
def generate(model, image_features, input_ids, attention_mask, max_new_tokens: int, eos_token_ids: list[int],
             num_beams: int = 1) -> torch.Tensor:
    """Greedy (or beam) answers for left-padded prompts; returns only the new tokens."""
    embeds = embed_with_image(model, image_features, input_ids)
    return model.language_model.generate(inputs_embeds=embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                         do_sample=False, num_beams=num_beams, eos_token_id=eos_token_ids,
                                         pad_token_id=model.config.text_config.pad_token_id)
