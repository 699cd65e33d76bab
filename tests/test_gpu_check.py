"""`medlib gpu-check`'s data: small data sets in the real formats that the paper profile's loaders read,
sized for two optimizer steps. (The check itself needs a GPU; on a CPU it records the refusal.)"""

import json

import pytest

import medlib.resources
from medlib import gpu_check


@pytest.fixture
def no_gpu_check(monkeypatch):
    monkeypatch.setattr(medlib.resources, "check_paper_resources", lambda *a, **k: None)


def test_fixtures_are_read_by_the_paper_loaders_and_make_two_steps(tmp_path, no_gpu_check):
    from medlib.experiments import clinicalblip, fixtures, medblip, minigpt_med

    p = fixtures.medblip(tmp_path / "m", gpu_check.STEPS, gpu_check.BATCH)
    data = medblip.load_data("paper", p["augment"], 0, p["diff_vqa_csv"], p["mimic_jpg_root"], "random")
    images, train, test = data.images, data.train, data.test
    assert len(train) == gpu_check.STEPS * p["batch_size"] and test
    assert images.pixel_values([0]).shape == (1, 3, 224, 224)

    p = fixtures.clinicalblip(tmp_path / "c", gpu_check.STEPS, gpu_check.BATCH)
    data = clinicalblip.load_data("paper", "iu_xray", p["annotation"], p["image_root"])
    train, test = data.train, data.test
    assert len(train) == gpu_check.STEPS * p["batch_size"] and len(test) == 2 and train[0]["reference"]

    p = fixtures.minigpt_med(tmp_path / "r", gpu_check.STEPS, gpu_check.BATCH)
    data = minigpt_med.load_data("paper", p["tasks"], 0, p["rsna_labels_csv"], p["rsna_image_dir"], 448)
    ds, train, test_ground = data.images, data.train, data.test
    assert len(train) == gpu_check.STEPS * p["batch_size"] and len(test_ground) == 2  # the image-shuffled control needs two
    assert ds.images[[0]].shape == (1, 448, 448)


def test_without_a_gpu_the_check_records_the_refusal(tmp_path):
    summary = gpu_check.run(tmp_path, only=["medblip"])
    (row,) = summary["checks"]
    assert row["status"] == "failed" and "needs a CUDA GPU" in row["error"]
    assert json.loads((tmp_path / "summary.json").read_text())["checks"][0]["status"] == "failed"
    assert (tmp_path / "summary.md").exists()
