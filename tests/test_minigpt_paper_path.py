"""MiniGPT-Med's paper-profile data path on CPU: real RSNA Pneumonia label rows (the label CSV that
ships in torchxrayvision) with DICOMs written at RSNA's 1024 px, read lazily, windowed and resized,
split by patient, turned into the grounding mixture and run through feature caching, training with
box augmentation, generation and strict scoring — what notebook 03 does. Only the GPU check is
bypassed and EVA-g / LLaMA-2 are swapped for tiny models of the same classes."""

import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaForCausalLM

from medlib.boxes import parse_boxes
from medlib.data import rsna
from medlib.data.dicom import write_dicom
from medlib.data.sources import RSNA_LABELS, xrv_file
from medlib.experiments import minigpt_med as exp
from medlib.models import minigpt_med as mg
from medlib.models.common import train_tokenizer
from medlib.train import TrainConfig, train


def real_rows(n_train: int = 6, n_test: int = 2, n_negative: int = 2) -> pd.DataFrame:
    """Real label rows of enough positive patients for both sides of the split, and a few negatives."""
    with zipfile.ZipFile(xrv_file(RSNA_LABELS)) as z:
        df = pd.read_csv(z.open(z.namelist()[0]))
    want, got = {"train": n_train, "test": n_test}, {"train": [], "test": []}
    for pid in df[df.Target == 1].patientId.unique():
        side = rsna.hash_split(f"rsna:{pid}", rsna.SPLIT)
        if side in want and len(got[side]) < want[side]:
            got[side].append(pid)
        if all(len(got[k]) == want[k] for k in want):
            break
    negatives = list(df[df.Target == 0].patientId.unique()[:n_negative])
    return df[df.patientId.isin(got["train"] + got["test"] + negatives)]


@pytest.fixture
def rsna_layout(tmp_path, monkeypatch):
    import medlib.resources

    monkeypatch.setattr(medlib.resources, "check_paper_resources", lambda *a, **k: None)  # CPU: no GPU check
    rows = real_rows()
    csv_path = tmp_path / "stage_2_train_labels.csv"
    rows.to_csv(csv_path, index=False)
    images = tmp_path / "stage_2_train_images"
    images.mkdir()
    for pid, g in rows.groupby("patientId"):
        px = np.full((1024, 1024), 800, np.uint16)
        for r in g.dropna(subset=["x"]).itertuples():  # the opacity is brighter than the background
            px[int(r.y):int(r.y + r.height), int(r.x):int(r.x + r.width)] = 3000
        write_dicom(images / f"{pid}.dcm", px)
    return csv_path, images, rows


def test_rsna_positive_patients_become_grounding_studies_split_by_patient(rsna_layout):
    csv_path, images, rows = rsna_layout
    ds = rsna.load(csv_path, images, image_size=56)
    positives = set(rows[rows.Target == 1].patientId)
    assert {s.uid for s in ds.studies} == positives and ds.meta["negative_patients"] == 2
    assert {s.uid for s in ds.split("train")}.isdisjoint({s.uid for s in ds.split("test")})
    first = ds.studies[0]
    r = rows[(rows.patientId == first.uid) & (rows.Target == 1)].iloc[0]
    assert first.drawn[0]["boxes"][0] == pytest.approx([r.x * 56 / 1024, r.y * 56 / 1024, (r.x + r.width) * 56 / 1024,
                                                        (r.y + r.height) * 56 / 1024])
    img = ds.images[first.index]
    assert img.shape == (56, 56) and img.dtype == np.uint8
    x1, y1, x2, y2 = (int(round(v)) for v in first.drawn[0]["boxes"][0])
    assert img[(y1 + y2) // 2, (x1 + x2) // 2] > img[2, 2]  # the box lies on the bright opacity
    assert ds.images[[0, 1]].shape == (2, 56, 56)
    assert len(ds.fingerprint) == 16 and ds.fingerprint != rsna.load(csv_path, images, image_size=112).fingerprint


def test_rsna_errors_name_the_file(rsna_layout, tmp_path):
    csv_path, images, rows = rsna_layout
    with pytest.raises(ValueError, match="needs rsna_labels_csv"):
        rsna.load("", images)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        rsna.load(tmp_path / "nope.csv", images)
    pid = rows[rows.Target == 1].patientId.iloc[0]
    write_dicom(images / f"{pid}.dcm", np.zeros((512, 512)))
    ds = rsna.load(csv_path, images, image_size=56)
    k = next(s.index for s in ds.studies if s.uid == pid)
    with pytest.raises(ValueError, match=f"{pid}.dcm: image is 512 x 512 px"):
        ds.images[k]
    with pytest.raises(ValueError, match="RSNA Pneumonia has boxes only"):
        exp.load_data("paper", ["detection", "vqa"], 0, str(csv_path), str(images), 56)


def test_paper_profile_grounds_on_rsna_through_the_notebook_path(rsna_layout, monkeypatch, tmp_path):
    csv_path, images, _ = rsna_layout
    monkeypatch.setattr(mg, "vit_paper", lambda size: mg.vit_tiny(size))
    assert exp.image_side("paper") == 448 and exp.image_side("tiny") == 128 and exp.image_side("paper", 64) == 64
    data = exp.load_data("paper", ["detection", "refer", "identify"], 0, str(csv_path), str(images), 64)
    ds, train_mix, test_ground = data.images, data.train, data.test
    test_vqa, test_reports = data.other_tests.get("vqa", []), data.other_tests.get("report", [])
    assert {s["task"] for s in train_mix} == {"detection", "refer", "identify"} and test_vqa == test_reports == []
    assert all(s["label"] == "pneumonia" and s["instruction"] == "[detection] pneumonia" for s in test_ground)
    assert len(test_ground) == 2
    tok = train_tokenizer([mg.TEMPLATE.format(instruction=s["instruction"]) + " " + s["answer"] for s in train_mix] * 5,
                          vocab_size=300)
    tok.pad_token = None  # as LLaMA's tokenizer ships
    torch.manual_seed(0)
    LlamaForCausalLM(mg.llama_tiny_config(len(tok), 0, tok.bos_token_id, tok.eos_token_id)).save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    model, tok, summary = exp.load_model("paper", 8, 16, image_size=64, llm_checkpoint=str(tmp_path / "llama"))
    model.float()  # bf16 matmuls are slow on a CPU; the dtype path is tested with the model itself
    px = exp.to_pixels(ds, ds.images[[0]])
    assert px.shape == (1, 3, 64, 64)
    assert px[0, 0].min() == pytest.approx(-rsna.PIXEL_MEAN[0] / rsna.PIXEL_STD[0], abs=0.2)  # CLIP statistics
    feats = exp.cached_features(model, ds, [s["image_index"] for s in train_mix + test_ground], key="paper:64")
    history = train(model, train_mix, exp.make_collate(ds, feats, True, 0), exp.make_loss(tok),
                    TrainConfig(num_epochs=1, lr=1e-3, batch_size=4, seed=0))
    assert np.isfinite([loss for _, loss in history["loss_curve"]]).all()
    outputs = exp.generate(model, tok, feats, test_ground, max_new_tokens=6)
    summary, detail = exp.grounding_summary(outputs, test_ground)
    assert len(detail["per_sample"]["iou_strict"]) == 2 and 0 <= summary["iou_strict"] <= 1
    perfect, _ = exp.grounding_summary([s["answer"] for s in test_ground], test_ground)
    assert perfect["iou_strict"] == pytest.approx(1.0) and all(parse_boxes(s["answer"]) for s in test_ground)
