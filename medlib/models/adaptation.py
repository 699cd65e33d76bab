"""The three papers' adaptation recipes on one shared backbone (notebook 04).

The backbone is the tiny zoo's BLIP-2: its ViT, its Q-Former and its OPT (`medlib.zoo.medblip`), the same
weights for every recipe. What each recipe keeps of its paper is its *trainable set*, its *stage order* and
its *learning-rate ratio*; the architecture around them is made common:

- **medblip**: the Q-Former's query tokens and query-branch feed-forward, plus `fc1` / `fc2` of a share of
  OPT's decoder layers taken from both ends of the stack (`models.medblip.set_trainable`); one stage.
  Budget: the unfreeze ratio.
- **clinicalblip**: stage 1, LoRA on the ViT's fused attention `qkv` with the Q-Former (and its query tokens
  and projection) trainable; the adapters merged; stage 2, LoRA on every linear layer of OPT's blocks, at a
  larger step (ClinicalBLIP's own stage-2 / stage-1 learning-rate ratio on the tiny profile, 10/3). Budget:
  the LoRA rank of both stages.
- **minigpt_med**: the Q-Former is bypassed: the ViT's patch tokens (CLS dropped), every 4 neighbours
  concatenated, go through one new linear projection into OPT (MiniGPT-v2's connector), with LoRA on OPT's
  `q_proj` / `v_proj`. Budget: the LoRA rank.
"""

from __future__ import annotations

import torch
from torch import nn

from medlib.models import medblip
from medlib.models.common import count_parameters
from medlib.models.minigpt_med import MERGE, concat_neighbours

RECIPES = ("medblip", "clinicalblip", "minigpt_med")
BUDGETS = ("small", "large")
# Each recipe's budget knob at the two budgets, sized so the trainable parameters summed over stages match within
# 10 % at each budget (counted by `start_stage`; tests/test_adaptation.py checks it): MedBLIP's unfreeze ratio (2
# and 8 of the tiny OPT's 16 layers: 100,096 / 298,624), ClinicalBLIP's LoRA rank of both stages (its stage 1
# trains the Q-Former, 88,512 whatever the rank, so rank 1 is its smallest: 107,712 / 299,712), MiniGPT-Med's
# LoRA rank (its projection is 16,448; 102,464 / 294,976; its paper's r = 64 is near the large one).
BUDGET_VALUES = {"medblip": {"small": 0.125, "large": 0.5},
                 "clinicalblip": {"small": 1, "large": 11},
                 "minigpt_med": {"small": 21, "large": 68}}
# The learning rates each recipe's own notebook uses on the tiny profile (its "learning-rate ratio" kept).
LEARNING_RATES = {"medblip": {"main": 2e-3}, "clinicalblip": {"stage1": 3e-3, "stage2": 1e-2}, "minigpt_med": {"main": 3e-3}}
STAGES = {"medblip": ("main",), "clinicalblip": ("stage1", "stage2"), "minigpt_med": ("main",)}
VISION_QKV = r".*vision_model\.encoder\.layers\.\d+\.self_attn\.qkv"
OPT_LINEAR = r".*language_model\.model\.decoder\.layers\.\d+\.(?:self_attn\.(?:q|k|v|out)_proj|fc1|fc2)"
OPT_QV = r".*language_model\.model\.decoder\.layers\.\d+\.self_attn\.(?:q|v)_proj"
LORA_ALPHA, LORA_DROPOUT = 16, 0.05


def check_recipe(recipe: str, budget: str) -> None:
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}; got {recipe!r}")
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}; got {budget!r}")


class SharedBackbone(nn.Module):
    """The zoo's BLIP-2 with the connector a recipe uses: the Q-Former (`connector="qformer"`, MedBLIP and
    ClinicalBLIP) or a new linear projection of concatenated patch tokens (`"linear"`, MiniGPT-Med)."""

    def __init__(self, blip: medblip.Blip2ForConditionalGeneration, connector: str):
        super().__init__()
        if connector not in ("qformer", "linear"):
            raise ValueError(f"connector must be qformer or linear; got {connector!r}")
        self.blip, self.connector = blip, connector
        vision, text = blip.config.vision_config, blip.config.text_config
        self.num_patches = (vision.image_size // vision.patch_size) ** 2
        self.proj = nn.Linear(MERGE * vision.hidden_size, text.hidden_size) if connector == "linear" else None

    @property
    def device(self):
        return self.blip.query_tokens.device

    @property
    def num_image_tokens(self) -> int:
        return self.blip.config.num_query_tokens if self.connector == "qformer" else self.num_patches // MERGE

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.blip.vision_model(pixel_values=pixel_values).last_hidden_state  # (B, 1 + patches, width)

    def prefix(self, features: torch.Tensor) -> torch.Tensor:
        """ViT features (B, 1 + P, Dv) -> the LLM-width image tokens written over the placeholders."""
        if self.connector == "qformer":
            return medblip.image_prefix(self.blip, features)
        return self.proj(concat_neighbours(features[:, 1:]))  # CLS dropped, as MiniGPT-v2 does

    def embed(self, features: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        embeds = self.blip.get_input_embeddings()(input_ids)
        mask = (input_ids == self.blip.config.image_token_id).unsqueeze(-1)
        return embeds.masked_scatter(mask, self.prefix(features).to(embeds.dtype))

    def loss(self, features, input_ids, attention_mask, labels) -> torch.Tensor:
        """Next-token loss on the answer positions only (logits computed only there)."""
        hidden = self.blip.language_model.model(inputs_embeds=self.embed(features, input_ids),
                                                attention_mask=attention_mask).last_hidden_state
        shift = labels[:, 1:]
        keep = shift != -100
        logits = self.blip.language_model.lm_head(hidden[:, :-1][keep])
        return nn.functional.cross_entropy(logits.float(), shift[keep])

    @torch.no_grad()
    def generate(self, features, input_ids, attention_mask, max_new_tokens: int, eos_token_ids: list[int]) -> torch.Tensor:
        return self.blip.language_model.generate(inputs_embeds=self.embed(features, input_ids), attention_mask=attention_mask,
                                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                                 eos_token_id=eos_token_ids, pad_token_id=self.blip.config.text_config.pad_token_id)


def build(blip, recipe: str) -> SharedBackbone:
    """The shared backbone wired for `recipe` (all weights frozen; `start_stage` sets what trains)."""
    model = SharedBackbone(blip, "linear" if recipe == "minigpt_med" else "qformer")
    model.requires_grad_(False)
    return model


def _lora(model: SharedBackbone, targets: str, r: int) -> None:
    """peft LoRA adapters injected into the BLIP-2 inside `model` (they alone of it train)."""
    # imported here: heavy: only where LoRA is attached
    from peft import LoraConfig, get_peft_model

    model.blip = get_peft_model(model.blip, LoraConfig(r=r, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
                                                       target_modules=targets, bias="none"))


def start_stage(model: SharedBackbone, recipe: str, budget: str, stage: str) -> dict:
    """Freeze everything, then make `stage` of `recipe`'s trainable set at `budget` train. Returns the
    counts (trainable / total parameters) and what trains. Call `end_stage` afterwards."""
    check_recipe(recipe, budget)
    if stage not in STAGES[recipe]:
        raise ValueError(f"recipe {recipe} has stages {STAGES[recipe]}; got {stage!r}")
    value = BUDGET_VALUES[recipe][budget]
    model.requires_grad_(False)
    what: dict = {"recipe": recipe, "budget": budget, "budget_value": value, "stage": stage}
    if recipe == "medblip":
        what["unfrozen_layers"] = medblip.set_trainable(model.blip, value)["unfrozen_layers"]
    elif recipe == "clinicalblip" and stage == "stage1":
        _lora(model, VISION_QKV, int(value))
        base = model.blip.get_base_model()
        for part in (base.qformer, base.language_projection):
            part.requires_grad_(True)
        base.query_tokens.requires_grad_(True)
    elif recipe == "clinicalblip":
        _lora(model, OPT_LINEAR, int(value))
    else:  # minigpt_med: the new projection and LoRA on q_proj / v_proj
        _lora(model, OPT_QV, int(value))
        model.proj.requires_grad_(True)
    return {**what, **count_parameters(model)}


def end_stage(model: SharedBackbone) -> None:
    """Merge a stage's LoRA adapters into the weights (a plain BLIP-2 again, all frozen)."""
    if hasattr(model.blip, "merge_and_unload"):
        model.blip = model.blip.merge_and_unload()
    model.requires_grad_(False)
