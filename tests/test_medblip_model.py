import pytest
import torch

from medlib.models import medblip
from medlib.models.common import count_parameters


@pytest.mark.parametrize("ratio,layers", [
    (0.0, []),
    (0.25, [0, 1, 2, 3, 28, 29, 30, 31]),
    (0.375, [0, 1, 2, 3, 4, 5, 26, 27, 28, 29, 30, 31]),
    (1.0, list(range(32))),
])
def test_ratio_maps_to_layers_as_in_medblip_code(ratio, layers):
    assert medblip.unfrozen_layers(ratio, 32) == layers


def test_ratio_31_25_unfreezes_layers_0_to_4_and_27_to_31():
    assert medblip.unfrozen_layers(0.3125, 32) == [0, 1, 2, 3, 4, 27, 28, 29, 30, 31]


def test_ratio_that_is_not_a_whole_number_of_layers_is_refused():
    with pytest.raises(ValueError, match="nearest: 0.3125"):
        medblip.unfrozen_layers(0.31, 32)


def tiny():
    torch.manual_seed(0)
    return medblip.build(medblip.tiny_config(vocab_size=120, image_size=64, image_token_id=5))


def test_trainable_set_is_exactly_medblips():
    model = tiny()
    medblip.set_trainable(model, 0.3125)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    opt = {n for n in trainable if n.startswith("language_model")}
    # 5 of the tiny OPT's 16 layers, the extra one at the front
    expected_opt = {f"language_model.model.decoder.layers.{i}.{fc}.{w}" for i in [0, 1, 2, 14, 15]
                    for fc in ("fc1", "fc2") for w in ("weight", "bias")}
    assert opt == expected_opt
    others = trainable - opt
    assert "query_tokens" in others
    assert all(n == "query_tokens" or ".intermediate_query." in n or ".output_query." in n for n in others)
    assert not any(n.startswith(("vision_model", "language_projection")) for n in trainable)


def test_paper_configuration_has_581m_trainable_at_31_25_percent():
    with torch.device("meta"):
        model = medblip.build(medblip.paper_config())
    summary = medblip.set_trainable(model, 0.3125)
    assert summary["trainable_params"] == 581_128_192  # ~581M, as docs/papers.md states
    assert 3.7e9 < count_parameters(model)["total_params"] < 3.8e9
    assert len(medblip.decoder_layers(model)) == 32


def test_keep_decoder_layers_cuts_the_stack_and_its_config(tmp_path):
    model = medblip.build(medblip.tiny_config(vocab_size=120, image_size=64, image_token_id=5, num_layers=32))
    first = [p.clone() for p in medblip.decoder_layers(model)[3].parameters()]
    medblip.keep_decoder_layers(model, 16)
    assert len(medblip.decoder_layers(model)) == 16 and model.config.text_config.num_hidden_layers == 16
    assert all(torch.equal(a, b) for a, b in zip(first, medblip.decoder_layers(model)[3].parameters()))
    model.save_pretrained(str(tmp_path))  # what is saved reloads as the 16-layer model
    assert len(medblip.decoder_layers(medblip.build(None, str(tmp_path)))) == 16
    with pytest.raises(ValueError, match="17 of 16"):
        medblip.keep_decoder_layers(model, 17)


def test_tiny_model_trains_and_generates():
    model = tiny()
    medblip.set_trainable(model, 0.25)
    q = model.config.num_query_tokens
    ids = torch.tensor([[5] * q + [1, 10, 11, 12, 2]])
    labels = torch.full_like(ids, -100)
    labels[0, -2:] = ids[0, -2:]
    feats = model.vision_model(pixel_values=torch.randn(1, 3, 64, 64)).last_hidden_state
    loss = medblip.lm_loss(model, feats, ids, torch.ones_like(ids), labels)
    loss.backward()
    assert model.language_model.model.decoder.layers[0].fc1.weight.grad is not None
    assert model.language_model.model.decoder.layers[10].fc1.weight.grad is None
    out = medblip.generate(model, feats, ids[:, :-2], torch.ones_like(ids[:, :-2]), 4, [2])
    assert out.shape[0] == 1 and out.shape[1] <= 4


def test_conv_stem_keeps_patch_grid_and_saves_batchnorm_state():
    model = tiny()
    medblip.add_conv_stem(model)
    out = model.vision_model(pixel_values=torch.randn(2, 3, 64, 64)).last_hidden_state
    assert out.shape[1] == (64 // 16) ** 2 + 1
    assert any("running_mean" in k for k in model.state_dict())


@pytest.mark.parametrize("conv_stem", [False, True], ids=["frozen-vit", "conv-stem"])
def test_gpu_dtypes_frozen_bf16_trainable_fp32_run_features_answers_and_a_step(conv_stem):
    """What `exp.place` does on a GPU (`gpu_dtypes`: frozen weights in bf16, trainable ones in fp32),
    on a CPU: the features, the answers (blank images too) and a training step under bf16 autocast all
    run, and the trainable weights and their gradients stay fp32."""
    from medlib.experiments import medblip as exp

    data = exp.load_data("smoke", False, 0)
    ds, train_qa, test_qa = data.images, data.train, data.test
    model, tok, _ = exp.load_model("smoke", 0.3125, conv_stem)
    exp.gpu_dtypes(model)
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert torch.bfloat16 in {p.dtype for p in model.parameters()}
    feats = exp.image_features(model, ds, [q["image_index"] for q in train_qa[:4] + test_qa[:4]])
    assert len(exp.answer(model, tok, ds, test_qa[:4], None if conv_stem else feats, max_new_tokens=3)) == 4
    assert len(exp.answer(model, tok, ds, test_qa[:4], max_new_tokens=3, blank=True)) == 4
    enc = exp.encode(train_qa[:4], tok, model.config.num_query_tokens, model.config.image_token_id, with_answer=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, n = exp.make_loss(ds, conv_stem)(model, exp.collate(enc, None if conv_stem else feats, tok.pad_token_id))
    loss.backward()
    assert torch.isfinite(loss) and n > 0
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def test_answers_come_back_in_the_samples_order():
    """`answer` batches by question type and length; each answer must still land on its own question."""
    from medlib.experiments import medblip as exp

    data = exp.load_data("smoke", False, 0)
    model, tok, _ = exp.load_model("smoke", 0.3125, False)
    qa = data.test[:12]
    assert len({q["question_type"] for q in qa}) > 1  # the sort reorders something
    feats = exp.image_features(model, data.images, [q["image_index"] for q in qa])
    one_by_one = [exp.answer(model, tok, data.images, [q], feats, max_new_tokens=4)[0] for q in qa]
    assert exp.answer(model, tok, data.images, qa, feats, max_new_tokens=4, batch_size=5) == one_by_one
