"""Entries of docs/bad_inputs.md not covered by the other test files: each names the problem."""

import json

import pytest
import torch

from medlib.data.loaders import r2gen_annotation
from medlib.metrics.text import medblip_scores
from medlib.models.clinicalblip import start_stage
from medlib.models.common import load_tokenizer
from medlib.models.medblip import unfrozen_layers
from medlib.profiles import get_profile
from medlib.train import TrainConfig, train


def test_truncated_checkpoint_names_the_file(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="checkpoint.pt: not a readable medlib checkpoint"):
        train(model, [torch.zeros(2)], torch.stack, lambda m, b: m(b).sum(), TrainConfig(), checkpoint_path=ckpt)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": {"other.weight": torch.zeros(1)}, "state": {}, "optimizer": {}, "scheduler": {}, "torch_rng": None}, ckpt)
    with pytest.raises(ValueError, match="weights this model does not have"):
        train(torch.nn.Linear(2, 1), [torch.zeros(2)], torch.stack, lambda m, b: m(b).sum(), TrainConfig(), checkpoint_path=ckpt)


def test_model_with_nothing_trainable_is_refused():
    model = torch.nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(model, [torch.zeros(2)], torch.stack, lambda m, b: m(b).sum(), TrainConfig())


def test_missing_tokenizer_names_the_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path)


def test_unknown_profile_and_stage():
    with pytest.raises(ValueError, match="smoke, tiny, paper"):
        get_profile("large")
    with pytest.raises(ValueError, match="stage1, stage2 or joint"):
        start_stage(torch.nn.Linear(1, 1), "stage3")


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan")])
def test_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match="unfreeze_ratio"):
        unfrozen_layers(ratio, 32)


def test_annotation_that_is_not_json(tmp_path):
    (tmp_path / "annotation.json").write_text("{'train': [")
    with pytest.raises(ValueError, match="annotation.json: not valid JSON"):
        r2gen_annotation(tmp_path / "annotation.json", tmp_path, "train")


def test_empty_report_in_annotation(tmp_path):
    (tmp_path / "annotation.json").write_text(json.dumps({"train": [{"id": "a", "report": "  ", "image_path": []}]}))
    with pytest.raises(ValueError, match="train entry 0 has no 'report'|empty 'report'"):
        r2gen_annotation(tmp_path / "annotation.json", tmp_path, "train")


def test_empty_generation_scores_zero_not_a_crash():
    s = medblip_scores(["", "   "], ["yes", "left lung"])
    assert s["rougeL"] == [0.0, 0.0] and s["bleu1"] == [0.0, 0.0]
