"""ClinicalBLIP's paper-profile path on CPU: R2Gen's annotation.json layout, a checkpoint *folder*
(model + InstructBlipProcessor, as a hub download leaves it) and the same staged training and
generation the tiny profile runs. Only the GPU check is bypassed; the model is tiny."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medlib.experiments import clinicalblip as exp
from medlib.models import clinicalblip as cb
from medlib.models.common import train_tokenizer

REPORTS = ["The heart is normal in size. The lungs are clear.", "Mild cardiomegaly. No effusion.",
           "Small left pleural effusion. No pneumothorax.", "Lungs are clear. No acute disease.", "Stable cardiomegaly."]


@pytest.fixture
def paper_layout(tmp_path, monkeypatch):
    import medlib.resources

    monkeypatch.setattr(medlib.resources, "check_paper_resources", lambda *a, **k: None)  # CPU: no GPU check
    rng = np.random.default_rng(0)
    entries = []
    for i, report in enumerate(REPORTS):
        (tmp_path / "images" / f"s{i}").mkdir(parents=True)
        for v in range(2):  # IU X-Ray: two images per study, the first frontal
            Image.fromarray(rng.integers(0, 255, (80, 80), dtype=np.uint8)).save(tmp_path / "images" / f"s{i}" / f"{v}.png")
        entries.append({"id": f"s{i}", "report": report, "image_path": [f"s{i}/0.png", f"s{i}/1.png"]})
    annotation = tmp_path / "annotation.json"
    annotation.write_text(json.dumps({"train": entries[:3], "val": [], "test": entries[3:]}))

    from transformers import BlipImageProcessor, InstructBlipProcessor

    tok = train_tokenizer(REPORTS * 20 + [cb.INSTRUCTION, cb.CHECKLIST], vocab_size=400)
    torch.manual_seed(0)
    model = cb.build(cb.tiny_config(len(tok), 64, tok.convert_tokens_to_ids("<image>"), tok.pad_token_id, tok.bos_token_id,
                                    tok.eos_token_id))
    folder = tmp_path / "instructblip"
    model.save_pretrained(str(folder))
    InstructBlipProcessor(image_processor=BlipImageProcessor(size={"height": 64, "width": 64}), tokenizer=tok,
                          qformer_tokenizer=tok, num_query_tokens=model.config.num_query_tokens).save_pretrained(str(folder))
    return annotation, tmp_path / "images", folder


def test_paper_profile_reads_r2gen_and_a_checkpoint_folder_and_trains_both_stages(paper_layout):
    annotation, images, folder = paper_layout
    data = exp.load_data("paper", "iu_xray", str(annotation), str(images))
    ds, train, test = data.images, data.train, data.test
    assert ds is None and len(train) == 3 and len(test) == 2
    assert train[1]["reference"] == "mild cardiomegaly . no effusion ."  # R2Gen's cleaning
    assert train[0]["image_path"].endswith("s0/0.png")

    model, (tok, qtok, proc), trainable = exp.load_model("paper", str(folder))
    assert trainable["trainable_params"] == 0  # nothing trains before a stage starts
    assert next(model.parameters()).dtype == torch.bfloat16 and proc is not None
    pixel_fn = lambda b: exp.pixels(b, None, proc)  # noqa: E731
    assert pixel_fn(train).shape == (3, 3, 64, 64)

    prompts = exp.prompts(train, "indication+checklist")
    enc = exp.encode(train, prompts, tok, qtok, model.config.num_query_tokens, model.config.image_token_id)
    collate = lambda b: exp.collate(b, tok.pad_token_id, qtok.pad_token_id, pixel_fn)  # noqa: E731
    model, history = exp.fit(model, "stage1+2", enc, collate, {"stage1": 1, "stage2": 1}, 1e-3, 2, 0,
                             {"r": 4, "alpha": 8, "dropout": 0.0}, "cpu")
    records = history["stages"]
    assert [r["stage"] for r in records] == ["stage1", "stage2"]
    assert all(np.isfinite(r["loss_curve"][-1][1]) for r in records)
    reports = exp.generate_reports(model, tok, qtok, test, exp.prompts(test, "none"), pixel_fn, num_beams=2, max_new_tokens=8)
    assert len(reports) == 2 and all(isinstance(r, str) for r in reports)


def test_paper_profile_names_what_is_missing(paper_layout, tmp_path):
    annotation, images, _ = paper_layout
    with pytest.raises(ValueError, match="set annotation= and image_root="):
        exp.load_data("paper", "iu_xray", "", "")
    with pytest.raises(ValueError, match="dataset must be one of"):
        exp.load_data("paper", "chexpert", str(annotation), str(images))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        exp.pixels([{"image_path": str(broken)}], None, None)
