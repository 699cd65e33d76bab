"""The tiny zoo that ships with the repository: its files hold their manifest, build 0 is read from it and
never written, other builds go to the cache, and the build path itself still trains."""

import math

import pytest

from medlib.zoo import SHIPPED_ZOO, local_builds, writable, zoo_dir
from medlib.zoo import shipped as ship

pytestmark = pytest.mark.skipif(not ship.MANIFEST.exists(), reason="this checkout has no shipped zoo")


def test_the_shipped_files_hold_their_manifest():
    assert ship.verify() == []
    m = ship.manifest()
    assert {entry["part"] for entry in m["files"].values()} >= {"medblip", "minigpt_med", "clinicalblip", "adaptation"}
    assert all(rel.endswith(".safetensors") or not rel.endswith(".pt") for rel in m["files"])  # no pickles shipped


def test_verify_names_a_changed_file(tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "zoo"
    shutil.copytree(SHIPPED_ZOO, copy)
    monkeypatch.setattr(ship, "SHIPPED_ZOO", copy)
    monkeypatch.setattr(ship, "MANIFEST", copy / "manifest.json")
    victim = next(p for p in sorted(copy.rglob("*.json")) if p.name == "zoo.json")
    victim.write_text(victim.read_text() + " ")
    (copy / "stray.bin").write_bytes(b"x")
    problems = ship.verify()
    assert any(str(victim.relative_to(copy)) in p and "changed" in p for p in problems)
    assert any("stray.bin: not in the manifest" in p for p in problems)


def test_build_0_is_read_from_the_shipped_zoo_and_others_from_the_cache():
    from medlib.data.synthcxr import build

    fp = build(image_size=128, progress=False).fingerprint
    assert zoo_dir(fp) == SHIPPED_ZOO / ship.manifest()["build"]
    assert SHIPPED_ZOO not in zoo_dir(fp, zoo_seed=1).parents
    with local_builds():
        assert SHIPPED_ZOO not in zoo_dir(fp).parents


def test_nothing_is_ever_built_into_the_shipped_zoo():
    with pytest.raises(RuntimeError, match="never written"):
        writable(SHIPPED_ZOO / ship.manifest()["build"] / "clinicalblip_x", "ClinicalBLIP's InstructBLIP")


def test_the_shipped_weights_load_as_the_tiny_profile_loads_them():
    from medlib.experiments import medblip as exp
    from medlib.paths import weights_fingerprint

    model, _, _ = exp.load_model("tiny", 0.3125, False)
    shipped = SHIPPED_ZOO / ship.manifest()["build"] / "medblip" / "model.safetensors"
    from safetensors.torch import load_file

    state = load_file(str(shipped))
    mine = model.state_dict()
    assert all(mine[k].equal(v) for k, v in state.items() if k in mine)
    assert weights_fingerprint(model)


def test_the_build_path_still_trains(monkeypatch):
    """One cheap pass through MedBLIP's zoo stages (one epoch each, 24 studies): the code a rebuild runs."""
    import medlib.zoo.medblip as zm
    from medlib.data.synthcxr import build
    from medlib.zoo import build_tokenizer

    for name in ("VISION_EPOCHS", "LM_EPOCHS", "ALIGN_EPOCHS"):
        monkeypatch.setattr(zm, name, 1)
    monkeypatch.setattr(zm, "VISION_RENDERS", 1)
    ds = build(image_size=128, limit=160, progress=False)
    pre = ds.split("pretrain")[:24]
    model, stats = zm.pretrain_medblip(ds, pre, build_tokenizer(pre), 128, progress=False)
    assert stats["vision_pretrain"]["epochs"] == 1
    for stage in ("vision_pretrain", "opt_lm_pretrain", "qformer_alignment"):
        assert math.isfinite(stats[stage]["final_loss"])
