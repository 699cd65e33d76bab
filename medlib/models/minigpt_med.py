"""MiniGPT-Med (Alkhaldi et al., 2024), on MiniGPT-v2's architecture.

An EVA ViT (timm) at 448 px gives 1024 patch tokens; a frozen LayerNorm; the CLS token dropped; every
4 consecutive tokens (raster order) concatenated -> 256 tokens of 4 x 1408; one Linear to the LLM's
width; LLaMA-2-chat with LoRA (r=64, alpha=16, dropout 0.05 on q_proj, v_proj). Trainable: LoRA and
the projection. The prompt is `[INST] <Img><ImageHere></Img> [task] instruction [/INST]`, with the
image embeddings spliced in at `<ImageHere>`, and the loss is on the answer only.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from medlib import fileio
from medlib.models.common import IMAGE_HERE, count_parameters, pad_sequences

PAPER_LLM = "meta-llama/Llama-2-7b-chat-hf"
TEMPLATE = "[INST] <Img>" + IMAGE_HERE + "</Img> {instruction} [/INST]"
MERGE = 4  # patch tokens concatenated into one LLM token


def vit_paper(img_size: int = 448):
    """EVA ViT-g as MiniGPT-v2 uses it: 39 of EVA-g's 40 blocks, width 1408, patch 14."""
    # imported here: heavy: only where an EVA ViT is built
    from timm.models.eva import Eva

    return Eva(img_size=img_size, patch_size=14, embed_dim=1408, depth=39, num_heads=16, mlp_ratio=6144 / 1408,
               num_classes=0, global_pool="")


def vit_tiny(img_size: int = 128):
    # imported here: heavy: only where an EVA ViT is built
    from timm.models.eva import Eva

    return Eva(img_size=img_size, patch_size=16, embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0, num_classes=0,
               global_pool="")


def patch_size(paper: bool, img_size: int) -> int:
    """The patch side of the ViT a profile builds, read from the model itself (built on the meta device:
    nothing is allocated)."""
    with torch.device("meta"):
        vit = (vit_paper if paper else vit_tiny)(img_size)
    return vit.patch_embed.patch_size[0]


def llama_paper_config() -> LlamaConfig:
    return LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def llama_tiny_config(vocab_size: int, pad_token_id: int = 0, bos_token_id: int = 1, eos_token_id: int = 2) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=172, num_hidden_layers=4, num_attention_heads=4,
                       max_position_embeddings=512, pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id)


def concat_neighbours(tokens: torch.Tensor, merge: int = MERGE) -> torch.Tensor:
    """(B, N, C) patch tokens, CLS already dropped -> (B, N / merge, merge * C): tokens
    [0..3] become the first, [4..7] the second, ... in raster order, as MiniGPT-v2 does."""
    b, n, c = tokens.shape
    if n % merge:
        raise ValueError(f"{n} patch tokens cannot be grouped by {merge}")
    return tokens.reshape(b, n // merge, merge * c)


class MiniGPTMed(nn.Module):
    def __init__(self, vit: nn.Module, llm: LlamaForCausalLM):
        super().__init__()
        self.visual_encoder = vit
        self.ln_vision = nn.LayerNorm(vit.embed_dim)
        self.llama_proj = nn.Linear(MERGE * vit.embed_dim, llm.config.hidden_size)
        self.llm = llm

    @property
    def device(self):
        return self.llama_proj.weight.device

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_patches / 4, D_llm)."""
        feats = self.ln_vision(self.visual_encoder.forward_features(pixel_values.to(self.llama_proj.weight.dtype)))
        feats = feats[:, self.visual_encoder.num_prefix_tokens:]  # drop CLS
        return self.llama_proj(concat_neighbours(feats))

    def project(self, vit_features: torch.Tensor) -> torch.Tensor:
        """Cached, already layer-normed ViT patch features (B, N, C) -> LLM tokens."""
        return self.llama_proj(concat_neighbours(vit_features))

    def vit_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.ln_vision(self.visual_encoder.forward_features(pixel_values.to(self.llama_proj.weight.dtype)))
        return feats[:, self.visual_encoder.num_prefix_tokens:]


def freeze_for_training(model: MiniGPTMed, lora_r: int = 64, lora_alpha: int = 16, lora_dropout: float = 0.05,
                        use_lora: bool = True, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> dict:
    """Freeze the ViT, its LayerNorm and the LLM; add LoRA to `targets` (MiniGPT-Med's q_proj / v_proj); train LoRA +
    projection."""
    # imported here: heavy: only where LoRA is attached
    from peft import LoraConfig, get_peft_model

    model.requires_grad_(False)
    if use_lora:
        model.llm = get_peft_model(model.llm, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                         target_modules=list(targets), bias="none"))
    model.llama_proj.requires_grad_(True)
    return count_parameters(model)


def splice(model: MiniGPTMed, tokenizer, image_embeds: torch.Tensor, instructions: list[str], answers: list[str] | None = None):
    """Embed `[INST] <Img><ImageHere></Img> {instruction} [/INST]` with the image tokens at <ImageHere>,
    then the answer and </s>. Returns inputs_embeds, attention_mask, labels (-100 on the prompt),
    right-padded for training, or left-padded without answers (for generation)."""
    emb = model.llm.get_input_embeddings()
    rows, labels = [], []
    for i, inst in enumerate(instructions):
        before, after = TEMPLATE.format(instruction=inst).split(IMAGE_HERE)
        a = [tokenizer.bos_token_id] + tokenizer(before, add_special_tokens=False)["input_ids"]
        b = tokenizer(after, add_special_tokens=False)["input_ids"]
        ans = tokenizer(" " + answers[i], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] if answers else []
        dev = image_embeds.device
        pieces = [emb(torch.tensor(a, device=dev)), image_embeds[i], emb(torch.tensor(b + ans, device=dev))]
        rows.append(torch.cat(pieces))
        labels.append([-100] * (len(a) + image_embeds.shape[1] + len(b)) + ans)
    side = "right" if answers else "left"  # right for training; left so generation starts after every prompt
    x, mask = pad_sequences(rows, 0.0, side)
    lab = pad_sequences([torch.tensor(lb, device=x.device) for lb in labels], -100, side)[0] if answers else \
        torch.full(mask.shape, -100, dtype=torch.long, device=x.device)
    return x, mask, lab


def answer_loss(model: MiniGPTMed, tokenizer, image_embeds: torch.Tensor, instructions: list[str], answers: list[str]):
    """MiniGPT-v2's objective: cross-entropy on the answer tokens only. `image_embeds` (B, tokens, D_llm) from
    `project` or `image_tokens`. Returns (loss, number of answer tokens), as `medlib.train.train` takes it."""
    x, mask, labels = splice(model, tokenizer, image_embeds, instructions, answers)
    base = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm  # under peft's wrapper
    hidden = base.model(inputs_embeds=x, attention_mask=mask).last_hidden_state  # (B, T, D)
    keep = labels[:, 1:] != -100
    logits = model.llm.get_output_embeddings()(hidden[:, :-1][keep])  # logits only where there is a label
    return nn.functional.cross_entropy(logits.float(), labels[:, 1:][keep]), int(keep.sum())


def paper_parameter_counts() -> dict:
    """Parameter counts of the paper configuration, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = MiniGPTMed(vit_paper(), LlamaForCausalLM(llama_paper_config()))
        summary = freeze_for_training(model)
    return {**summary, "image_tokens": (448 // 14) ** 2 // MERGE}


def load_eva_weights(vit, path) -> int:
    """EVA ViT weights from a file into `vit` (e.g. MiniGPT-v2's `eva_vit_g.pth`, or an EVA / EVA-CLIP
    checkpoint): timm's own EVA converter renames them and resamples the position embeddings to
    this model's grid (448 px: 32 x 32 patches). Returns the number of tensors loaded; refuses,
    naming the file, one that leaves weights missing or whose shapes belong to another ViT."""
    # imported here: heavy: only where an EVA ViT is built
    from timm.models.eva import checkpoint_filter_fn

    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not an EVA checkpoint (expected a dict of tensors)")
    try:
        converted = checkpoint_filter_fn(state, vit)
        missing, _unexpected = vit.load_state_dict(converted, strict=False)
    except (RuntimeError, KeyError) as err:
        raise ValueError(f"{path}: not EVA ViT weights of this configuration ({str(err).splitlines()[0]})") from err
    missing = [k for k in missing if not k.endswith("k_bias")]  # EVA has no key bias: a zero buffer
    if missing:
        raise ValueError(f"{path}: lacks {len(missing)} of the ViT's weights, e.g. {missing[:3]}")
    return len(converted)


RELEASED_PREFIX = "llama_model."  # MiniGPT-v2's name for the (peft-wrapped) LLaMA


def _released_key(key: str) -> str:
    """A key of MiniGPT-Med's checkpoint -> this model's: `llama_model.` is `llm.`, and LoRA weights
    saved by peft before adapters had names (`lora_A.weight`) sit under the `default` adapter."""
    if key.startswith(RELEASED_PREFIX):
        key = "llm." + key[len(RELEASED_PREFIX):]
    for part in ("lora_A", "lora_B"):
        key = key.replace(f".{part}.weight", f".{part}.default.weight")
    return key


def load_released_checkpoint(model: MiniGPTMed, path) -> list[str]:
    """Load MiniGPT-Med's released fine-tuned checkpoint into `model` (after `freeze_for_training`,
    so the LoRA modules exist). The file is MiniGPT-v2's training checkpoint: a torch file whose
    "model" entry holds the trained weights, `llama_proj.*` and the LoRA weights under `llama_model.*`.
    Returns the keys loaded; refuses (naming the file and the key) a file without the projection,
    with weights this model does not have, or with shapes of another configuration."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a MiniGPT-Med checkpoint (expected a dict with a 'model' entry of tensors)")
    mine = model.state_dict()
    wanted = {k for k in mine if k.startswith("llama_proj.") or ".lora_" in k}
    loaded = {}
    for key, value in state.items():
        k = _released_key(key)
        if k not in wanted:
            raise ValueError(f"{path}: entry {key!r} is not a projection or LoRA weight of this model "
                             "(was LoRA added, with MiniGPT-Med's target modules q_proj/v_proj?)")
        if value.shape != mine[k].shape:
            raise ValueError(f"{path}: entry {key!r} has shape {tuple(value.shape)}, this model's is {tuple(mine[k].shape)}: "
                             "the checkpoint is of another configuration (paper: EVA ViT-g + LLaMA-2-7B, LoRA r=64)")
        loaded[k] = value
    if not any(k.startswith("llama_proj.") for k in loaded):
        raise ValueError(f"{path}: holds no llama_proj weights; is this MiniGPT-Med's checkpoint?")
    model.load_state_dict(loaded, strict=False)
    return sorted(loaded)


def save_in_released_format(model: MiniGPTMed, path) -> None:
    """Write the trained projection and LoRA weights as MiniGPT-Med's released checkpoint lays them
    out, so that `load_released_checkpoint` (and the notebook's `released_checkpoint`) reads them back."""
    state = {("llama_model." + k[len("llm."):] if k.startswith("llm.") else k): v.detach().cpu().clone()
             for k, v in model.state_dict().items() if k.startswith("llama_proj.") or ".lora_" in k}
    fileio.write_with(path, lambda p: torch.save({"model": state}, p))
