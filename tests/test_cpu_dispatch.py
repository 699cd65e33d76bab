"""The same numbers whichever CPU code paths the machine offers: medlib pins torch, MKL and oneDNN to AVX2
and one thread (`medlib.seeding`). Two machines are emulated on this one: an AVX2-only machine (MKL capped
at AVX2 by its own switch, every library told AVX2) and this machine as it is; with the pin both train the
smoke MedBLIP arm to identical numbers. Where this CPU has AVX-512, the unpinned run shows the pin matters."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _arm(out: Path, **env) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                          "MEDLIB_CPU_DISPATCH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MEDLIB_THREADS")}
    subprocess.run([sys.executable, "-m", "medlib", "run", "medblip", "--profile", "smoke", "-p", "num_epochs", "1",
                    "--output-dir", str(out)], check=True, capture_output=True, env={**clean, **env})
    rec = json.loads((out / "run.json").read_text())
    return {"loss": rec["train_info"]["loss_curve"], "metrics": rec["train_info"]["metrics"],
            "dispatch": rec["meta_info"]["device"]["cpu_dispatch"]}


def test_an_avx2_machine_and_this_machine_give_identical_numbers(tmp_path):
    here = _arm(tmp_path / "here")
    avx2_only = _arm(tmp_path / "avx2", MKL_ENABLE_INSTRUCTIONS="AVX2", ATEN_CPU_CAPABILITY="avx2",
                     ONEDNN_MAX_CPU_ISA="AVX2", OMP_NUM_THREADS="2")
    assert here["dispatch"]["torch_cpu_capability"] == avx2_only["dispatch"]["torch_cpu_capability"] == "AVX2"
    assert here["dispatch"]["torch_threads"] == avx2_only["dispatch"]["torch_threads"] == 1
    assert here["loss"] == avx2_only["loss"] and here["metrics"] == avx2_only["metrics"]

    if "avx512f" in Path("/proc/cpuinfo").read_text(errors="ignore"):
        native = _arm(tmp_path / "native", MEDLIB_CPU_DISPATCH="native")
        assert native["dispatch"]["torch_cpu_capability"] != "AVX2"
        assert native["loss"] != here["loss"], "unpinned AVX-512 kernels gave the pinned numbers: the test shows nothing"


def test_torch_running_before_medlib_is_recorded_and_warned_about():
    if "avx512f" not in Path("/proc/cpuinfo").read_text(errors="ignore"):
        pytest.skip("on a CPU without AVX-512 torch's own choice is AVX2: nothing to warn about")
    clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MEDLIB_CPU_DISPATCH")}
    code = ("import warnings, torch\ntorch.ones(64).exp().sum()  # a kernel runs: torch fixes its kernel set now\nimport medlib.seeding as s\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always'); d = s.cpu_dispatch()\n"
            "print(d['torch_cpu_capability'], any('not AVX2' in str(x.message) for x in w))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=clean).stdout.split()
    assert out[0] != "AVX2" and out[1] == "True"
