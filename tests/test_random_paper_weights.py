"""`checkpoint="random"` on the paper profile: the paper's architecture with random weights and
medlib's local tokenizer, nothing downloaded — what a GPU check of the paper path runs. On a CPU the
paper configurations are swapped for small ones of the same classes (a 7B model does not fit a test);
their real sizes are checked on the meta device."""

import pytest
import torch

import medlib.resources
from medlib.models import clinicalblip as cb
from medlib.models import medblip
from medlib.models import minigpt_med as mg
from medlib.models.common import RANDOM_WEIGHTS


@pytest.fixture(autouse=True)
def no_gpu_check(monkeypatch):
    monkeypatch.setattr(medlib.resources, "check_paper_resources", lambda *a, **k: None)


def test_random_medblip_uses_the_local_tokenizers_ids_and_blips_image_processor(monkeypatch):
    from medlib.experiments import medblip as exp

    monkeypatch.setattr(medblip, "paper_config", lambda: medblip.tiny_config(4000, 224, num_layers=32))
    model, tok, summary = exp.load_model("paper", 0.3125, False, RANDOM_WEIGHTS)
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<image>")
    assert (model.config.text_config.pad_token_id, model.config.text_config.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    assert summary["unfrozen_layers"] == [0, 1, 2, 3, 4, 27, 28, 29, 30, 31]
    enc = exp.encode([{"question": "is there effusion?", "answer": "no"}], tok, model.config.num_query_tokens,
                     model.config.image_token_id, with_answer=True)
    ids = torch.tensor([enc[0]["input_ids"]])
    feats = model.vision_model(pixel_values=torch.randn(1, 3, 224, 224)).last_hidden_state
    assert torch.isfinite(medblip.lm_loss(model, feats, ids, torch.ones_like(ids), torch.tensor([enc[0]["labels"]])))


def test_random_clinicalblip_and_minigpt_build_in_bf16(monkeypatch):
    from medlib.experiments import clinicalblip as cexp
    from medlib.experiments import minigpt_med as mexp

    monkeypatch.setattr(cb, "paper_config", lambda: cb.tiny_config(4000, 224))
    model, (tok, qtok, proc), _ = cexp.load_model("paper", RANDOM_WEIGHTS)
    assert model.dtype == torch.bfloat16 and model.config.image_token_id == tok.convert_tokens_to_ids("<image>")
    assert proc.size == {"height": 224, "width": 224}

    monkeypatch.setattr(mg, "vit_paper", lambda size: mg.vit_tiny(size))
    monkeypatch.setattr(mg, "llama_paper_config", lambda: mg.llama_tiny_config(4000))
    model, tok, summary = mexp.load_model("paper", 8, 16, image_size=64, llm_checkpoint=RANDOM_WEIGHTS)
    assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    assert model.llm.config.eos_token_id == tok.eos_token_id and summary["eva_weights"] == "random"


def test_the_paper_configurations_have_the_papers_sizes():
    from transformers import Blip2ForConditionalGeneration

    with torch.device("meta"):
        blip2 = Blip2ForConditionalGeneration(medblip.paper_config())
    n = sum(p.numel() for p in blip2.parameters())
    assert 3.7e9 < n < 3.9e9  # BLIP-2 OPT-2.7B: 3.74 B with its ViT-g and Q-Former
