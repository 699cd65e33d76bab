"""Each notebook's paper path end to end on a CPU: `medlib gpu-check`'s data in the real formats and
`checkpoint="random"`, with the paper configurations swapped for small ones of the same classes and
the GPU check bypassed. The notebook's code cells run in this process (so the swaps apply), with the
parameters injected after the parameters cell as papermill would. What a GPU run of `gpu-check`
adds is only the real sizes."""

import json

import matplotlib
import nbformat
import pytest

import medlib.resources
from medlib import gpu_check
from medlib.experiments import get
from medlib.models import clinicalblip as cb
from medlib.models import medblip
from medlib.models import minigpt_med as mg

matplotlib.use("Agg")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["medblip", "clinicalblip", "minigpt_med"])
def test_paper_path_of_the_notebook_runs_on_random_weights(experiment, tmp_path, monkeypatch):
    monkeypatch.setenv("PAPERMILL_EXECUTION", "1")
    monkeypatch.setattr(medlib.resources, "check_paper_resources", lambda *a, **k: None)
    monkeypatch.setattr(medblip, "paper_config", lambda: medblip.tiny_config(4000, 224, num_layers=32))
    monkeypatch.setattr(cb, "paper_config", lambda: cb.tiny_config(4000, 224))
    monkeypatch.setattr(mg, "vit_paper", lambda size: mg.vit_tiny(size))
    monkeypatch.setattr(mg, "llama_paper_config", lambda: mg.llama_tiny_config(4000))
    write, params = gpu_check.CHECKS[experiment]
    params = {"profile": "paper", **params, **write(tmp_path / "data", gpu_check.STEPS, gpu_check.BATCH), "output_dir": str(tmp_path / "run")}
    if experiment == "minigpt_med":
        params["image_size"] = 64  # the tiny EVA's patch 16; the paper's 448 goes with patch 14
    spec = get(experiment)
    nb = nbformat.read(spec.notebook, as_version=4)
    namespace = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, str(spec.notebook), "exec"), namespace)
            if "parameters" in cell.metadata.get("tags", []):
                namespace.update(params)
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["train_info"]["status"] == "finished" and rec["run_info"]["profile"] == "paper"
    steps = gpu_check.train_steps(rec["train_info"])
    assert steps == ("2 (stage1) + 2 (stage2)" if experiment == "clinicalblip" else str(gpu_check.STEPS))
