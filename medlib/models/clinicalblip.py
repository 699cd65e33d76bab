"""ClinicalBLIP (Ji et al., JMIR Form Res 2024): InstructBLIP fine-tuned with multi-stage LoRA and
prompted with prior knowledge, for radiology report generation.

Only the abstract is public, so the stage design is medlib's (docs/papers.md, ClinicalBLIP: stages):
- stage 1: LoRA on the vision encoder's fused attention `qkv`, the Q-Former trainable, the LLM frozen;
- stage 2: the stage-1 adapters merged into the weights and frozen, LoRA on every linear layer of the LLM's blocks;
- joint: both LoRAs (and the Q-Former) in one stage; zero-shot: nothing trains.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import (
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
)

from medlib.models.common import count_parameters, pad_sequences

PAPER_CHECKPOINT = "Salesforce/instructblip-vicuna-7b"


class Processors(NamedTuple):
    """What turns text and images into InstructBLIP's inputs: the LLM's tokenizer, the Q-Former's (the
    same object on CPU profiles) and the image processor (None where medlib's own normalisation serves)."""
    tokenizer: object
    qformer_tokenizer: object
    image_processor: object | None
STAGES = ("zero-shot", "stage1", "stage2", "stage1+2", "joint")
# The training stages each arm runs, in order (stage 2 after stage 1 starts from the merged weights).
STAGE_PLAN = {"zero-shot": (), "stage1": ("stage1",), "stage2": ("stage2",), "stage1+2": ("stage1", "stage2"), "joint": ("joint",)}
PRIORS = ("none", "indication+checklist", "oracle-leak")
VISION_TARGETS = r".*vision_model\.encoder\.layers\.\d+\.self_attn\.qkv"
# Every linear layer of the LLM's blocks (attention and MLP), as QLoRA-style recipes adapt: with q_proj / v_proj
# alone the tiny LLaMA never left its normal-report prior, even with the answer's findings in the prompt
# (docs/papers.md, ClinicalBLIP: what was tried).
LLM_TARGETS = r".*language_model\.(?:model\.)?layers\.\d+\.(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)"
INSTRUCTION = "Write the findings and impression of this chest X-ray."
CHECKLIST = "Cover: heart size, mediastinum, lungs, pleura, bones, devices."


def prompt(indication: str = "", prior: str = "none", oracle_tags: list[str] | None = None) -> str:
    """The instruction, with ClinicalBLIP's prior knowledge when asked for, in lower case.

    prior="none": the instruction alone. "indication+checklist": the study's INDICATION (known before
    the image is read) and a fixed checklist of what a chest report covers. "oracle-leak": the
    ground-truth tags — leakage, kept only to show how much a leaked prior inflates the scores.

    Lower case, with the tags' "/" as spaces, because the reports are (R2Gen's cleaning): a prompt then
    names a finding in the words the report will use. The tiny tokenizer learnt only lower-case report
    text, and broke "Calcified Granuloma/lung" into single letters the model could not copy.
    """
    if prior == "none":
        text = INSTRUCTION
    elif prior == "indication+checklist":
        text = f"Indication: {indication.strip() or 'not given'} {CHECKLIST} {INSTRUCTION}"
    elif prior == "oracle-leak":
        text = f"Known findings (leaked from the answer): {'; '.join(oracle_tags or []) or 'normal'}. {INSTRUCTION}"
    else:
        raise ValueError(f"prior must be one of none, indication+checklist, oracle-leak; got {prior!r}")
    return " ".join(text.lower().replace("/", " ").split())


def paper_config() -> InstructBlipConfig:
    """InstructBLIP Vicuna-7B's architecture, written out so nothing is downloaded."""
    vision = InstructBlipVisionConfig(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                                      image_size=224, patch_size=14, qkv_bias=True)
    qformer = InstructBlipQFormerConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                                        cross_attention_frequency=2, encoder_hidden_size=1408, vocab_size=30523)
    text = LlamaConfig(vocab_size=32001, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       max_position_embeddings=2048, rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return InstructBlipConfig(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                              num_query_tokens=32, image_token_index=32000)


def tiny_config(vocab_size: int, image_size: int = 128, image_token_id: int | None = None, pad_token_id: int = 0,
                bos_token_id: int = 1, eos_token_id: int = 2) -> InstructBlipConfig:
    vision = InstructBlipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                                      image_size=image_size, patch_size=16, qkv_bias=True)
    qformer = InstructBlipQFormerConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                        cross_attention_frequency=2, encoder_hidden_size=64, vocab_size=vocab_size,
                                        pad_token_id=pad_token_id)
    text = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=172, num_hidden_layers=4, num_attention_heads=4,
                       max_position_embeddings=512, pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    return InstructBlipConfig(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                              num_query_tokens=8, image_token_index=image_token_id)


def build(config: InstructBlipConfig | None, checkpoint: str | None = None, dtype=None) -> InstructBlipForConditionalGeneration:
    if checkpoint:
        return InstructBlipForConditionalGeneration.from_pretrained(checkpoint, dtype=dtype)
    return InstructBlipForConditionalGeneration(config)


def lora_config(targets: str, r: int, alpha: int, dropout: float, vision_r: int | None = None, vision_alpha: int | None = None):
    """peft LoRA on `targets`; the vision encoder's `qkv` may take its own rank and alpha (joint stage)."""
    # imported here: heavy: only where LoRA is attached
    from peft import LoraConfig

    patterns = {}
    if vision_r is not None:
        patterns["rank_pattern"] = {"qkv": vision_r}
    if vision_alpha is not None:
        patterns["alpha_pattern"] = {"qkv": vision_alpha}
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none", **patterns)


def start_stage(model, stage: str, r: int = 8, alpha: int = 16, dropout: float = 0.05, vision_r: int | None = None,
                vision_alpha: int | None = None):
    """Wrap `model` for one training stage and set what trains. Returns (model to train, summary).

    stage "stage1": LoRA on the ViT `qkv` + the Q-Former; "stage2": LoRA on the LLM's linear layers (`LLM_TARGETS`);
    "joint": both. `r`/`alpha` are the LLM adapters' and, unless `vision_r`/`vision_alpha` say
    otherwise, the vision adapters' too. Call `end_stage` afterwards to merge the adapters."""
    # imported here: heavy: only where LoRA is attached
    from peft import get_peft_model

    if stage not in ("stage1", "stage2", "joint"):
        raise ValueError(f"a training stage is stage1, stage2 or joint; got {stage!r}")
    vr, va = vision_r or r, vision_alpha or alpha
    config = {"stage1": lora_config(VISION_TARGETS, vr, va, dropout),
              "stage2": lora_config(LLM_TARGETS, r, alpha, dropout),
              "joint": lora_config(f"({VISION_TARGETS})|({LLM_TARGETS})", r, alpha, dropout, vr, va)}[stage]
    model.requires_grad_(False)
    peft_model = get_peft_model(model, config)
    if stage in ("stage1", "joint"):
        base = peft_model.get_base_model()
        base.qformer.requires_grad_(True)
        base.query_tokens.requires_grad_(True)
        base.language_projection.requires_grad_(True)
    return peft_model, {"stage": stage, "lora_modules": lora_module_names(peft_model), **count_parameters(peft_model)}


def end_stage(peft_model):
    """Merge the stage's LoRA weights into the base weights and return the plain model, all frozen."""
    model = peft_model.merge_and_unload()
    model.requires_grad_(False)
    return model


def lora_module_names(model) -> list[str]:
    return sorted({name.rsplit(".lora_A", 1)[0] for name, _ in model.named_parameters() if ".lora_A" in name})


def generation_inputs(tokenizer, qformer_tokenizer, prompts: list[str], num_query_tokens: int, image_token_id: int,
                      max_len: int = 96) -> dict:
    """Left-padded LLM prompts (image placeholders first) and right-padded Q-Former instructions."""
    llm = [[image_token_id] * num_query_tokens + [tokenizer.bos_token_id] + tokenizer(p, add_special_tokens=False)["input_ids"][:max_len]
           for p in prompts]
    ids, mask = pad_sequences(llm, tokenizer.pad_token_id, side="left")
    q = qformer_tokenizer(prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return {"input_ids": ids, "attention_mask": mask, "qformer_input_ids": q["input_ids"],
            "qformer_attention_mask": q["attention_mask"]}


COMPONENTS = {"vision encoder": "vision_model.", "Q-Former (+ query tokens, projection)": ("qformer.", "query_tokens", "language_projection."),
              "LLM": "language_model."}


def stage_table(model, **lora) -> list[dict]:
    """For each training stage, per component: LoRA parameters, other trainable parameters and
    frozen parameters. Counted on a meta-device twin built from `model.config` (no weights, no
    memory, so the 7B paper model is never copied); `lora` goes to `start_stage`."""
    rows = []
    for stage in ("stage1", "stage2", "joint"):
        with torch.device("meta"):
            twin = type(model)(model.config)
        pm, _ = start_stage(twin, stage, **lora)
        for comp, prefix in COMPONENTS.items():
            named = [(n.removeprefix("base_model.model."), p) for n, p in pm.named_parameters()]
            mine = [(n, p) for n, p in named if n.startswith(prefix)]
            rows.append({"stage": stage, "component": comp,
                         "lora_params": sum(p.numel() for n, p in mine if "lora_" in n),
                         "trainable_params": sum(p.numel() for n, p in mine if p.requires_grad and "lora_" not in n),
                         "frozen_params": sum(p.numel() for n, p in mine if not p.requires_grad)})
    return rows
