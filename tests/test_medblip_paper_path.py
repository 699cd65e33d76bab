"""MedBLIP's paper-profile path on CPU: Medical-Diff-VQA's CSV with MIMIC-CXR-JPG images, a
checkpoint *folder* (model, tokenizer and image processor, as a hub download leaves it) and the
same feature caching, training and answering the tiny profile runs. Only the GPU check is
bypassed; the model is tiny."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from medlib.data.loaders import PaperImages
from medlib.data.splits import hash_split
from medlib.experiments import medblip as exp
from medlib.models import medblip
from medlib.models.common import train_tokenizer
from medlib.train import TrainConfig, train

QUESTIONS = [("abnormality", "what abnormalities are seen in this image?", "pleural effusion"),
             ("presence", "is there pneumothorax?", "no"), ("view", "which view is this image taken?", "PA"),
             ("difference", "what has changed compared to the reference image?", "nothing has changed")]


@pytest.fixture
def paper_layout(tmp_path, monkeypatch):
    import medlib.resources

    monkeypatch.setattr(medlib.resources, "check_paper_resources", lambda *a, **k: None)  # CPU: no GPU check
    rng = np.random.default_rng(0)
    rows = []
    for k in range(12):
        subject, study, dicom = f"1000{k:04d}", f"5{k:07d}", f"d{k}"
        folder = tmp_path / "mimic" / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (96, 80), dtype=np.uint8)).save(folder / f"{dicom}.jpg")
        rows += [{"study_id": study, "subject_id": subject, "question_type": t, "question": q, "answer": a, "dicom_id": dicom}
                 for t, q, a in QUESTIONS]
    csv_path = tmp_path / "mimic_pair_questions.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    from transformers import BlipImageProcessor

    tok = train_tokenizer([medblip.PROMPT.format(question=q) + " " + a for _, q, a in QUESTIONS] * 20, vocab_size=300)
    torch.manual_seed(0)
    model = medblip.build(medblip.tiny_config(len(tok), 64, tok.convert_tokens_to_ids("<image>"), tok.pad_token_id,
                                              tok.bos_token_id, tok.eos_token_id))
    ckpt = tmp_path / "blip2"
    model.save_pretrained(str(ckpt))
    tok.save_pretrained(str(ckpt))
    BlipImageProcessor(size={"height": 64, "width": 64}).save_pretrained(str(ckpt))
    return csv_path, tmp_path / "mimic", ckpt


def test_paper_profile_reads_diff_vqa_and_a_checkpoint_folder_and_trains(paper_layout):
    csv_path, root, ckpt = paper_layout
    data = exp.load_data("paper", True, 0, str(csv_path), str(root), str(ckpt))
    ds, train_qa, test_qa = data.images, data.train, data.test
    assert isinstance(ds, PaperImages) and len(ds.paths) == 12
    # "difference" questions need a reference image: left out; the rest split by study, 70 / 15 / 15
    assert {q["question_type"] for q in train_qa + test_qa} == {"abnormality", "presence", "view"}
    expected_test = {f"5{k:07d}" for k in range(12) if hash_split(f"medblip:5{k:07d}", exp.PAPER_SPLIT) == "test"}
    assert {q["study"] for q in test_qa} == expected_test and expected_test
    assert not {q["study"] for q in train_qa} & {q["study"] for q in test_qa}
    assert any(q.get("augmented") for q in train_qa)  # MedBLIP's rewriting, on the training pairs only
    assert test_qa[0]["answer"] == test_qa[0]["answer"].lower()

    model, tok, trainable = exp.load_model("paper", 0.3125, False, str(ckpt))
    assert trainable["unfrozen_layers"] == [0, 1, 2, 14, 15]  # the checkpoint's 16 layers (a tiny one)
    px = exp.pixels(ds, [0, 1])
    assert px.shape == (2, 3, 64, 64)
    assert torch.allclose(exp.pixels(ds, [0], blank=True)[0], exp.pixels(ds, [0], blank=True)[0, :, :1, :1].expand(3, 64, 64))

    feats = exp.cached_features(model, ds, [q["image_index"] for q in train_qa + test_qa], model_key=f"paper:{ckpt}")
    from medlib.experiments import get

    resolved = get("medblip").resolved({"profile": "paper", "lr": 0.0, "batch_size": 0})
    lr, batch_size = resolved["lr"], resolved["batch_size"]
    assert (lr, batch_size) == (1e-5, 4)  # MedBLIP's code
    enc = exp.encode(train_qa, tok, model.config.num_query_tokens, model.config.image_token_id, with_answer=True)
    history = train(model, enc[:8], lambda b: exp.collate(b, feats, tok.pad_token_id), exp.make_loss(ds, False),
                    TrainConfig(num_epochs=1, lr=lr, batch_size=batch_size, seed=0))
    assert len(history["loss_curve"]) == 2 and all(np.isfinite(loss) for _, loss in history["loss_curve"])
    answers = exp.answer(model, tok, ds, test_qa, feats, max_new_tokens=3)
    blank = exp.answer(model, tok, ds, test_qa, None, max_new_tokens=3, blank=True)
    assert len(answers) == len(blank) == len(test_qa) and all(isinstance(a, str) for a in answers + blank)


def test_paper_profile_asks_for_its_data(paper_layout, tmp_path):
    with pytest.raises(ValueError, match="set diff_vqa_csv= and mimic_jpg_root="):
        exp.load_data("paper", True, 0)
    only_difference = tmp_path / "diff_only.csv"
    only_difference.write_text("study_id,subject_id,question_type,question,answer,dicom_id\n"
                               "50000000,10000000,difference,what has changed?,nothing,d0\n")
    with pytest.raises(ValueError, match="diff_only.csv: no question of the types abnormality"):
        exp.load_data("paper", True, 0, str(only_difference), str(paper_layout[1]), str(paper_layout[2]))
