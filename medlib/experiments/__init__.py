"""The experiments: which notebook each is, and the sweeps `medlib reproduce` runs.

This module stays import-light (no torch) so `medlib list` answers at once; the code a
notebook calls lives in the sibling modules (`medblip.py`, `clinicalblip.py`, ...).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from medlib.params import Parameter, check_common, notebook_parameters

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@dataclass(frozen=True)
class Experiment:
    name: str
    notebook_file: str
    title: str
    # Each sweep is a grid {parameter: [values]}; `medlib reproduce` runs them all.
    sweeps: tuple[dict, ...] = field(default=())
    # "module:function" that turns the finished arms into tables and figures.
    aggregator: str | None = None
    # parameter -> "module:function" giving the value a sweep writes as "best", from the finished arms.
    resolvers: dict = field(default_factory=dict)
    # "module:function" that builds what the tiny profile's arms share (the zoo), once, before
    # parallel arms would race to build it.
    prepare: str | None = None
    # "module:function(parameters, origin)" raising ParameterError for a combination of values the
    # run would refuse later (paths the profile needs, sizes the model cannot take).
    checker: str | None = None

    @property
    def notebook(self) -> Path:
        return NOTEBOOKS / self.notebook_file

    def parameters(self) -> dict[str, Parameter]:
        return _parameters(self.notebook)

    def resolve(self, grid: dict, run_dirs) -> dict:
        """Replace "best" values in a sweep grid using the resolvers and the finished arms."""
        out = {}
        for name, values in grid.items():
            if "best" in values:
                module, func = self.resolvers[name].split(":")
                best = getattr(importlib.import_module(module), func)(run_dirs)
                values = [best if v == "best" else v for v in values]
            out[name] = values
        return out

    def check(self, parameters: dict) -> None:
        """Every rule beyond one value's type and range, before anything runs: the shared ones
        (`params.check_common`), then the experiment's own."""
        origin = f"{self.name} ({self.notebook_file})"
        check_common(parameters, origin)
        if self.checker:
            module, func = self.checker.split(":")
            getattr(importlib.import_module(module), func)(parameters, origin)

    def prepare_tiny(self) -> None:
        if self.prepare:
            module, func = self.prepare.split(":")
            getattr(importlib.import_module(module), func)()

    def aggregate(self, run_dirs, out_dir):
        if self.aggregator is None:
            return None
        module, func = self.aggregator.split(":")
        return getattr(importlib.import_module(module), func)(run_dirs, out_dir)


@cache
def _parameters(path: Path) -> dict[str, Parameter]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: notebook not found; medlib runs from a source checkout (pip install -e .)")
    return notebook_parameters(path)


SEEDS = [0, 1, 2]
MEDBLIP_RATIOS = [i * 0.0625 for i in range(9)] + [1.0]
CLINICALBLIP_STAGES = ["zero-shot", "stage1", "stage2", "stage1+2", "joint"]  # medlib.models.clinicalblip.STAGES, without torch

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in [
        Experiment("data_tour", "00_data_tour.ipynb", "A tour of SynthCXR-IU and the real data on disk",
                   sweeps=({},)),
        Experiment("medblip", "01_medblip_unfreeze_ratio.ipynb",
                   "MedBLIP: which share of OPT's fully connected layers to unfreeze",
                   sweeps=(
                       {"unfreeze_ratio": MEDBLIP_RATIOS, "seed": SEEDS},
                       # the two further axes, at the best ratio the first sweep found
                       {"unfreeze_ratio": ["best"], "augment": [False], "seed": SEEDS},
                       {"unfreeze_ratio": ["best"], "conv_stem": [True], "seed": SEEDS},
                   ),
                   aggregator="medlib.experiments.medblip:aggregate",
                   resolvers={"unfreeze_ratio": "medlib.experiments.medblip:best_ratio"},
                   prepare="medlib.zoo:build_zoo", checker="medlib.experiments.medblip:check_parameters"),
        Experiment("clinicalblip", "02_clinicalblip_multistage_lora.ipynb",
                   "ClinicalBLIP: multi-stage LoRA and prior knowledge for report generation",
                   sweeps=(
                       {"stages": CLINICALBLIP_STAGES, "prior": ["none", "indication+checklist"], "seed": SEEDS},
                       # the leakage demonstration, once, labelled as such in every table
                       {"prior": ["oracle-leak"], "seed": [0]},
                   ),
                   aggregator="medlib.experiments.clinicalblip:aggregate",
                   prepare="medlib.zoo:build_clinicalblip_zoo", checker="medlib.experiments.clinicalblip:check_parameters"),
        Experiment("minigpt_med", "03_minigpt_med_grounding.ipynb",
                   "MiniGPT-Med: disease grounding with boxes written as text",
                   sweeps=(
                       {"seed": SEEDS},
                       {"tasks": [["detection", "refer", "identify"]], "seed": SEEDS},
                       {"lora_r": [8], "seed": SEEDS},
                       {"use_lora": [False], "seed": SEEDS},
                   ),
                   aggregator="medlib.experiments.minigpt_med:aggregate",
                   prepare="medlib.zoo:build_minigpt_zoo", checker="medlib.experiments.minigpt_med:check_parameters"),
    ]
}


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "+".join(map(str, value))
    return str(value)


def arm_name(declared: dict[str, Parameter], parameters: dict) -> str:
    """A folder name for an arm: the parameters that differ from the notebook's defaults."""
    skip = {"output_dir", "profile", "checkpoint_every", "overwrite"}  # where and how, not what (runs.BOOKKEEPING)
    parts = [f"{k}={_fmt(v)}" for k, v in sorted(parameters.items())
             if k not in skip and k in declared and v != declared[k].default]
    name = ",".join(parts) or "default"
    return "".join(c if c.isalnum() or c in "=,.+-_" else "_" for c in name)
