import pytest
import torch
from transformers import LlamaForCausalLM

from medlib.models import clinicalblip as cb
from medlib.models import minigpt_med as mg
from medlib.models.common import count_parameters, train_tokenizer


def tiny_instructblip():
    torch.manual_seed(0)
    return cb.build(cb.tiny_config(vocab_size=300, image_size=64, image_token_id=5))


def test_stage1_puts_lora_only_on_the_vit_qkv_and_trains_the_qformer():
    pm, summary = cb.start_stage(tiny_instructblip(), "stage1")
    assert summary["lora_modules"] and all(n.endswith("self_attn.qkv") and "vision_model" in n for n in summary["lora_modules"])
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert not any("language_model" in n for n in trainable)
    assert any(".qformer." in n for n in trainable)


def test_stage2_merges_stage1_first_and_then_trains_only_llm_lora():
    pm, _ = cb.start_stage(tiny_instructblip(), "stage1")
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            p.data.fill_(0.01)  # a trained adapter
    pm.eval()  # no LoRA dropout while comparing
    lora_delta = pm.get_base_model().vision_model.encoder.layers[0].self_attn.qkv
    x = torch.randn(2, lora_delta.in_features)
    with torch.no_grad():
        expected = lora_delta(x)  # base + adapter
    merged = cb.end_stage(pm)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged.vision_model.encoder.layers[0].self_attn.qkv(x), expected, atol=1e-5)
    pm2, summary = cb.start_stage(merged, "stage2")
    assert all("language_model" in n for n in summary["lora_modules"])
    # every linear layer of each LLM block: attention and MLP
    assert {n.rsplit(".", 1)[1] for n in summary["lora_modules"]} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable = [n for n, p in pm2.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_joint_stage_carries_both_loras():
    _, summary = cb.start_stage(tiny_instructblip(), "joint")
    names = summary["lora_modules"]
    assert any(n.endswith("qkv") for n in names) and any(n.endswith("q_proj") for n in names)


def test_joint_stage_gives_each_side_its_own_rank():
    pm, _ = cb.start_stage(tiny_instructblip(), "joint", r=4, alpha=8, vision_r=2, vision_alpha=4)
    base = pm.get_base_model()
    assert base.vision_model.encoder.layers[0].self_attn.qkv.lora_A["default"].out_features == 2
    assert base.language_model.model.layers[0].self_attn.q_proj.lora_A["default"].out_features == 4


def test_stage_table_counts_what_each_stage_trains():
    rows = {(r["stage"], r["component"]): r for r in cb.stage_table(tiny_instructblip())}
    assert rows[("stage1", "vision encoder")]["lora_params"] > 0 and rows[("stage1", "LLM")]["lora_params"] == 0
    assert rows[("stage1", "Q-Former (+ query tokens, projection)")]["frozen_params"] == 0
    assert rows[("stage2", "Q-Former (+ query tokens, projection)")]["trainable_params"] == 0
    assert rows[("stage2", "LLM")]["lora_params"] > 0 and rows[("stage2", "vision encoder")]["lora_params"] == 0
    # every stage counts the whole model once
    total = sum(p.numel() for p in tiny_instructblip().parameters())
    assert sum(r["frozen_params"] + r["trainable_params"] for (s, _), r in rows.items() if s == "stage1") == total


def test_fit_runs_stage1_then_stage2_on_the_merged_model():
    from medlib.experiments.clinicalblip import fit

    model = tiny_instructblip()
    torch.manual_seed(0)
    samples = [{"input_ids": [5] * 8 + [1, 20, 21, 22, 2], "labels": [-100] * 10 + [21, 22, 2]} for _ in range(4)]

    def collate(b):
        ids = torch.tensor([x["input_ids"] for x in b])
        return {"pixel_values": torch.randn(len(b), 3, 64, 64), "input_ids": ids, "labels": torch.tensor([x["labels"] for x in b]),
                "attention_mask": torch.ones_like(ids), "qformer_input_ids": ids[:, 8:], "qformer_attention_mask": torch.ones_like(ids[:, 8:])}

    vit_before = model.vision_model.encoder.layers[0].self_attn.qkv.weight.clone()
    llm_before = model.language_model.model.layers[0].self_attn.q_proj.weight.clone()
    out, history = fit(model, "stage1+2", samples, collate, {"stage1": 1, "stage2": 1}, 1e-2, 2, 0,
                       {"r": 4, "alpha": 8, "dropout": 0.0}, "cpu")
    records = history["stages"]
    assert [r["stage"] for r in records] == ["stage1", "stage2"]
    assert not any("lora_" in n for n, _ in out.named_parameters())  # merged, a plain model again
    assert not torch.equal(out.vision_model.encoder.layers[0].self_attn.qkv.weight, vit_before)
    assert not torch.equal(out.language_model.model.layers[0].self_attn.q_proj.weight, llm_before)
    assert not any(p.requires_grad for p in out.parameters())
    with pytest.raises(ValueError, match="stages must be one of"):
        fit(model, "stage3", samples, collate, {}, 1e-2, 2, 0, {}, "cpu")


def test_prior_prompts():
    assert cb.prompt() == cb.INSTRUCTION.lower()
    assert cb.prompt("cough", "indication+checklist").startswith("indication: cough cover: heart size")
    assert "leaked" in cb.prompt("", "oracle-leak", ["Cardiomegaly/mild"])
    with pytest.raises(ValueError, match="prior must be one of"):
        cb.prompt("", "everything")


def test_instructblip_paper_configuration_size():
    with torch.device("meta"):
        model = cb.build(cb.paper_config())
    total = count_parameters(model)["total_params"]
    assert 7.8e9 < total < 8.0e9  # InstructBLIP Vicuna-7B: ~7.9B


def test_four_neighbouring_tokens_are_concatenated_in_raster_order():
    tokens = torch.arange(8 * 2).float().reshape(1, 8, 2)  # token t has features (2t, 2t+1)
    out = mg.concat_neighbours(tokens)
    assert out.shape == (1, 2, 8)
    assert out[0, 0].tolist() == list(range(0, 8)) and out[0, 1].tolist() == list(range(8, 16))


def test_minigpt_med_paper_configuration_trains_lora_and_projection_only():
    counts = mg.paper_parameter_counts()
    # LoRA r=64 on q_proj and v_proj of 32 layers (33.55M) + Linear 5632 -> 4096 (23.07M)
    assert counts["trainable_params"] == 32 * 2 * 64 * (4096 + 4096) + 5632 * 4096 + 4096
    assert counts["image_tokens"] == 256


def test_tiny_minigpt_med_prompt_mask_covers_the_prompt_and_trains():
    tok = train_tokenizer(["[INST] <Img></Img> [detection] opacity [/INST] <p>opacity</p> {<1><2><3><4>}"] * 5, vocab_size=300)
    torch.manual_seed(0)
    model = mg.MiniGPTMed(mg.vit_tiny(64), LlamaForCausalLM(mg.llama_tiny_config(len(tok), tok.pad_token_id, tok.bos_token_id,
                                                                                 tok.eos_token_id)))
    summary = mg.freeze_for_training(model, lora_r=4)
    assert summary["trainable_params"] < summary["total_params"]
    img = model.image_tokens(torch.randn(2, 3, 64, 64))
    assert img.shape == (2, (64 // 16) ** 2 // 4, 64)
    answers = ["<p>opacity</p> {<1><2><3><4>}", "opacity"]
    x, mask, labels = mg.splice(model, tok, img, ["[detection] opacity", "[identify] what is it in {<1><2><3><4>}"], answers)
    n_answer = len(tok(" " + answers[0], add_special_tokens=False)["input_ids"]) + 1
    assert (labels[0] != -100).sum().item() == n_answer  # only the answer (and </s>) is supervised
    out = model.llm(inputs_embeds=x, attention_mask=mask)
    logits = out.logits[:, :-1][labels[:, 1:] != -100]
    loss = torch.nn.functional.cross_entropy(logits, labels[:, 1:][labels[:, 1:] != -100])
    loss.backward()
    assert model.llama_proj.weight.grad is not None
    assert all(p.grad is None for p in model.visual_encoder.parameters())


def _tiny_minigpt(seed: int, lora_r: int = 4):
    torch.manual_seed(seed)
    model = mg.MiniGPTMed(mg.vit_tiny(64), LlamaForCausalLM(mg.llama_tiny_config(300)))
    mg.freeze_for_training(model, lora_r=lora_r)
    return model


def test_released_checkpoint_in_minigpt_v2_layout_loads_projection_and_lora(tmp_path):
    """MiniGPT-v2's training checkpoint: {"model": trained weights named `llama_proj.*` and
    `llama_model.base_model.model.model.layers.N.self_attn.{q,v}_proj.lora_{A,B}[.default].weight`}."""
    trained, fresh = _tiny_minigpt(0), _tiny_minigpt(1)
    trained_state = trained.state_dict()
    released = {}
    for k, v in trained_state.items():
        if k.startswith("llama_proj.") or ".lora_" in k:
            k = k.replace("llm.", "llama_model.", 1)
            # the LoRA half without the adapter name, as peft before named adapters saved it
            released[k.replace(".lora_A.default.", ".lora_A.")] = v.clone()
    path = tmp_path / "miniGPT_Med.pth"
    torch.save({"model": released, "config": {"arch": "minigpt_v2"}, "epoch": 3}, path)
    keys = mg.load_released_checkpoint(fresh, path)
    assert any(k.startswith("llama_proj.") for k in keys) and sum(".lora_" in k for k in keys) == 4 * 2 * 2
    fresh_state = fresh.state_dict()
    for k in keys:
        assert torch.equal(fresh_state[k], trained_state[k]), k
    # the frozen LLM and ViT are untouched
    assert not torch.equal(fresh_state["llm.base_model.model.model.layers.0.mlp.up_proj.weight"],
                           trained_state["llm.base_model.model.model.layers.0.mlp.up_proj.weight"])
    # medlib writes the same layout back
    again = tmp_path / "again.pth"
    mg.save_in_released_format(trained, again)
    other = _tiny_minigpt(2)
    assert mg.load_released_checkpoint(other, again) == keys


def test_released_checkpoint_of_another_configuration_is_refused(tmp_path):
    path = tmp_path / "rank8.pth"
    mg.save_in_released_format(_tiny_minigpt(0, lora_r=8), path)
    with pytest.raises(ValueError, match=r"rank8.pth: entry 'llama_model.*lora_A.* has shape \(8, 64\), this model's is \(4, 64\)"):
        mg.load_released_checkpoint(_tiny_minigpt(1, lora_r=4), path)
    torch.save({"model": {"llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 64)}},
               tmp_path / "no_proj.pth")
    with pytest.raises(ValueError, match="no_proj.pth: holds no llama_proj weights"):
        mg.load_released_checkpoint(_tiny_minigpt(1), tmp_path / "no_proj.pth")
    torch.save({"model": {"llama_proj.weight": torch.zeros(64, 256), "llama_model.lm_head.weight": torch.zeros(300, 64)}},
               tmp_path / "full.pth")
    with pytest.raises(ValueError, match="full.pth: entry 'llama_model.lm_head.weight' is not a projection or LoRA weight"):
        mg.load_released_checkpoint(_tiny_minigpt(1), tmp_path / "full.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="list.pth: not a MiniGPT-Med checkpoint"):
        mg.load_released_checkpoint(_tiny_minigpt(1), tmp_path / "list.pth")


def test_eva_weights_load_through_timms_converter_with_the_grid_resampled(tmp_path):
    """An EVA checkpoint at another resolution (as EVA-g's 224 px weights meet MiniGPT-Med's 448 px):
    timm's converter resamples the position embeddings; every other tensor arrives unchanged."""
    torch.manual_seed(0)
    source = mg.vit_tiny(64)  # 4 x 4 patches
    torch.save(source.state_dict(), tmp_path / "eva_vit_g.pth")
    target = mg.vit_tiny(128)  # 8 x 8 patches
    assert mg.load_eva_weights(target, tmp_path / "eva_vit_g.pth") > 0
    assert torch.equal(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert target.pos_embed.shape == (1, 1 + 64, 64) and source.pos_embed.shape == (1, 1 + 16, 64)
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="other.pth"):
        mg.load_eva_weights(mg.vit_tiny(64), tmp_path / "other.pth")


def test_minigpt_paper_path_loads_llama_from_a_folder_and_runs_in_bf16(tmp_path, monkeypatch):
    """The paper branch of `load_model` with a local LLaMA folder (what a hub download leaves) and EVA
    weights from a file; the EVA-g shape is swapped for the tiny one so that it runs on a CPU."""
    import medlib.resources
    from medlib.experiments import minigpt_med as exp

    monkeypatch.setattr(medlib.resources, "check_paper_resources", lambda *a, **k: None)
    monkeypatch.setattr(mg, "vit_paper", lambda size: mg.vit_tiny(size))
    tok = train_tokenizer(["[INST] <Img></Img> [detection] pneumonia [/INST] <p>pneumonia</p> {<1><2><3><4>}"] * 5, vocab_size=300)
    tok.pad_token = None  # as LLaMA's tokenizer ships
    LlamaForCausalLM(mg.llama_tiny_config(len(tok), 0, tok.bos_token_id, tok.eos_token_id)).save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    torch.save(mg.vit_tiny(64).state_dict(), tmp_path / "eva.pth")
    model, tok2, summary = exp.load_model("paper", 8, 16, image_size=64, llm_checkpoint=str(tmp_path / "llama"),
                                          eva_checkpoint=str(tmp_path / "eva.pth"))
    assert tok2.pad_token is not None and summary["eva_weights"] > 0
    # bf16 throughout, but for the LoRA adapters, which peft keeps in fp32 for stable updates
    assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    img = model.image_tokens(torch.randn(2, 3, 64, 64))
    x, mask, labels = mg.splice(model, tok2, img, ["[detection] pneumonia"] * 2, ["<p>pneumonia</p> {<1><2><3><4>}"] * 2)
    assert torch.isfinite(model.llm(inputs_embeds=x, attention_mask=mask, labels=labels).loss)


def test_minigpt_image_size_renders_the_data_at_the_side_the_encoder_is_built_for():
    """`image_size` on smoke / tiny renders SynthCXR-IU at that side (the encoder's), not the profile's."""
    from medlib.experiments import minigpt_med as exp

    data = exp.load_data("smoke", ["detection"], 0, image_size=64)
    model, _, _ = exp.load_model("smoke", 8, 16, image_size=64)
    assert data.images.image_size == 64 and data.images.images.shape[1:] == (64, 64)
    assert all(0 <= v <= 100 for s in data.test for b in s["boxes"] for v in b)
    tokens = model.image_tokens(exp.to_pixels(data.images, data.images.images[:2]))
    assert tokens.shape[:2] == (2, (64 // 16) ** 2 // mg.MERGE)
    assert exp.load_data("smoke", ["detection"], 0).images.image_size == 128  # 0: the profile's side
