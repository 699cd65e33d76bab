"""The experiments: which notebook each is, and the sweeps `medlib reproduce` runs.

This module stays import-light (no torch) so `medlib list` answers at once. The code a notebook calls lives in
the sibling modules, under the same names for every paper (docs/architecture.md): `<name>.py` offers
`check_parameters`, `build_zoo` and the verbs its notebook calls, and `<name>_results.py` offers `aggregate` and
`RESOLVERS` (what a sweep's "best" stands for). Each `Experiment` names its two modules in an import statement of
its own (`_medblip`, ...), run when a run, a build or an aggregation needs them.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path

from medlib import fileio, runs
from medlib.params import Parameter, ParameterError, check_common, notebook_parameters, resolve
from medlib.paths import REPO_ROOT
from medlib.seeding import pin_threads, seed_everything

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@dataclass(frozen=True)
class Experiment:
    name: str
    notebook_file: str
    title: str
    # Each sweep is a grid {parameter: [values]}; `medlib reproduce` runs them all.
    sweeps: tuple[dict, ...] = field(default=())
    # parameter -> {profile: value} used where the notebook's value is 0 ("the profile's"); the paper
    # profile's come from the paper's code or its base model's recipe (docs/papers.md, "training").
    profile_defaults: dict = field(default_factory=dict)
    # () -> (the paper module, its results module), imported on first use; None: a notebook without either (the tour)
    modules: Callable[[], tuple] | None = None

    @property
    def notebook(self) -> Path:
        return NOTEBOOKS / self.notebook_file

    def parameters(self) -> dict[str, Parameter]:
        return _parameters(self.notebook)

    @property
    def has_code(self) -> bool:
        return self.modules is not None

    def code(self):
        """The paper module (`medlib.experiments.<name>`): what the notebook calls, with `check_parameters` and `build_zoo`."""
        return self.modules()[0]

    def results_code(self):
        """The results module (`medlib.experiments.<name>_results`): `aggregate` and `RESOLVERS`."""
        return self.modules()[1]

    def resolve(self, grid: dict, run_dirs) -> dict:
        """Replace "best" values in a sweep grid using the resolvers and the finished arms."""
        out = {}
        for name, values in grid.items():
            if "best" in values:
                best = self.results_code().RESOLVERS[name](run_dirs)
                values = [best if v == "best" else v for v in values]
            out[name] = values
        return out

    def resolved(self, parameters: dict) -> dict:
        """`parameters` with every 0 of a `profile_defaults` parameter replaced by the profile's value:
        what the run trains with, what run.json records, and what two runs are compared by. A parameter the
        notebook declares and `parameters` lacks (one added after a run was recorded) takes its notebook default,
        the value that run had."""
        out = {**{k: p.default for k, p in self.parameters().items() if k not in parameters}, **parameters}
        profile = out.get("profile", "tiny")
        for name, by_profile in self.profile_defaults.items():
            if name in out and not out[name] and profile in by_profile:
                out[name] = by_profile[profile]
        return out

    def check(self, parameters: dict) -> None:
        """Every rule beyond one value's type and range, before anything runs: the shared ones
        (`params.check_common`), then the experiment's own."""
        origin = f"{self.name} ({self.notebook_file})"
        check_common(parameters, origin)
        if self.has_code:  # (parameters, origin): raises ParameterError for a combination the run would refuse later
            self.code().check_parameters(parameters, origin)

    def prepare_tiny(self, pending: list[dict] = ()) -> None:
        """Build what the pending tiny arms share (each zoo build they name), once, before they start."""
        if self.has_code:
            build = self.code().build_zoo
            zoo_seeds = sorted({int(p["zoo_seed"]) for p in pending if p.get("zoo_seed")})
            build()
            for zoo_seed in zoo_seeds:
                build(zoo_seed=zoo_seed)

    def aggregate(self, run_dirs, out_dir):
        if not self.has_code:
            return None
        return self.results_code().aggregate(run_dirs, out_dir)


@cache
def _parameters(path: Path) -> dict[str, Parameter]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: notebook not found; medlib runs from a source checkout (pip install -e .)")
    return notebook_parameters(path)


SEEDS = [0, 1, 2]
MORE_SEEDS = [3, 4]  # with SEEDS: the five seeds of the arms a verdict rests on
ZOO_BUILDS = [0, 1, 2]  # a claim's arms run on three builds of the tiny zoo: the build is a unit like the seed
MEDBLIP_RATIOS = [0.0, 0.25, 0.3125, 0.375, 1.0]  # the ratios the claim compares (0.125 and 0.5 cut: no part rests on them)
MINIGPT_GROUNDING = ["detection", "refer", "identify"]  # MiniGPT-Med's grounding tasks, without VQA and reports
# MiniGPT-Med's arm the claim rests on, named before its runs: the grounding tasks (an arm of the full mixture takes
# twice as long: its VQA and reports), LoRA r=64 and box augmentation as the released code (whose crop moves the
# boxes too, here)
MINIGPT_ARM = {"tasks": [MINIGPT_GROUNDING]}
CLINICALBLIP_PRIORS = ["none", "indication+checklist"]
ADAPTATION_RECIPES = ["medblip", "clinicalblip", "minigpt_med"]  # medlib.models.adaptation.RECIPES, without torch

# Imported on use: the paper modules bring torch and the models, which `medlib list` does not need.
def _medblip():
    from medlib.experiments import medblip, medblip_results
    return medblip, medblip_results


def _clinicalblip():
    from medlib.experiments import clinicalblip, clinicalblip_results
    return clinicalblip, clinicalblip_results


def _minigpt_med():
    from medlib.experiments import minigpt_med, minigpt_med_results
    return minigpt_med, minigpt_med_results


def _adaptation():
    from medlib.experiments import adaptation, adaptation_results
    return adaptation, adaptation_results


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in [
        Experiment("data_tour", "00_data_tour.ipynb", "A tour of SynthCXR-IU and the real data on disk",
                   sweeps=({},)),
        Experiment("medblip", "01_medblip_unfreeze_ratio.ipynb",
                   "MedBLIP: which share of OPT's fully connected layers to unfreeze", modules=_medblip,
                   # every ratio the claim rests on (and the curve around it) on three zoo builds, three seeds each
                   sweeps=({"unfreeze_ratio": MEDBLIP_RATIOS, "seed": SEEDS, "zoo_seed": ZOO_BUILDS},),
                   # paper: MedBLIP's code; tiny / smoke: a tiny model trained for minutes needs a larger step
                   profile_defaults={"lr": {"paper": 1e-5, "tiny": 2e-3, "smoke": 2e-3},
                                     "batch_size": {"paper": 4, "tiny": 32, "smoke": 32},
                                     # the most an arm may train; early stopping on validation loss ends it sooner
                                     "num_epochs": {"paper": 3, "tiny": 2, "smoke": 1}}),
        Experiment("clinicalblip", "02_clinicalblip_multistage_lora.ipynb",
                   "ClinicalBLIP: multi-stage LoRA and prior knowledge for report generation", modules=_clinicalblip,
                   sweeps=(
                       # zero-shot trains nothing and decodes deterministically: one run per prior, not seeds
                       {"stages": ["zero-shot"], "prior": CLINICALBLIP_PRIORS, "seed": [0]},
                       # the claim's arms (clinicalblip_results.CLAIM): stage 1 -> 2 with the prior, each single stage
                       # with it, and stage 1 -> 2 without it, on three zoo builds, three seeds each, one training budget
                       {"stages": ["stage1", "stage2", "stage1+2"], "prior": ["indication+checklist"], "seed": SEEDS,
                        "zoo_seed": ZOO_BUILDS},
                       {"stages": ["stage1+2"], "prior": ["none"], "seed": SEEDS, "zoo_seed": ZOO_BUILDS},
                       # both LoRAs in one stage, at the same budget: described beside the claim, no part rests on it
                       {"stages": ["joint"], "prior": ["indication+checklist"], "seed": SEEDS},
                       # the leakage demonstration and sanity check, once, labelled as such in every table
                       {"prior": ["oracle-leak"], "seed": [0]},
                   ),
                   # paper: InstructBLIP's recipe for Vicuna-7B (ClinicalBLIP publishes none). tiny / smoke: each chosen on
                   # validation, on stage 1 alone and stage 2 alone with the prior at the 3-pass budget, by the mean over
                   # zoo builds 0, 1 and 2 (docs/papers.md)
                   profile_defaults={"lr": {"paper": 1e-5, "tiny": 3e-3, "smoke": 3e-3},
                                     "lr_stage2": {"paper": 1e-5, "tiny": 1e-2, "smoke": 1e-2},
                                     "batch_size": {"paper": 128, "tiny": 16, "smoke": 16}}),
        Experiment("minigpt_med", "03_minigpt_med_grounding.ipynb",
                   "MiniGPT-Med: disease grounding with boxes written as text", modules=_minigpt_med,
                   sweeps=(
                       # the claim's arms (minigpt_med_results.CLAIM): the grounding mixture fine-tuned from the general
                       # grounding stage, on three zoo builds, three seeds each; and that stage as it is (zero-shot: nothing
                       # trains, decoding is greedy: one run per build)
                       {**MINIGPT_ARM, "seed": SEEDS, "zoo_seed": ZOO_BUILDS},
                       {**MINIGPT_ARM, "zero_shot": [True], "seed": [0], "zoo_seed": ZOO_BUILDS},
                       # described beside the claim, on build 0: the other starting points (the in-domain grounding stage,
                       # fine-tuned and as it is; none), and the notebook's default arm once (the full mixture, VQA and
                       # reports too). The projection alone and no box augmentation were cut: no part rests on them
                       {**MINIGPT_ARM, "grounding_stage": ["in-domain", "none"], "seed": SEEDS},
                       {**MINIGPT_ARM, "grounding_stage": ["in-domain"], "zero_shot": [True], "seed": [0]},
                       {"seed": [0]},
                   ),
                   # paper: MiniGPT-Med's released fine-tuning configuration
                   profile_defaults={"lr": {"paper": 1e-5, "tiny": 3e-3, "smoke": 3e-3},
                                     "batch_size": {"paper": 6, "tiny": 32, "smoke": 32}}),
        Experiment("adaptation", "04_adaptation_strategies.ipynb",
                   "The three recipes on one backbone: which adaptation wins which task, at what cost", modules=_adaptation,
                   sweeps=(
                       # the claims' arms (adaptation_results.CLAIMS): every recipe at the large budget on three builds of
                       # the shared backbone, three seeds each
                       {"recipe": ADAPTATION_RECIPES, "budget": ["large"], "seed": SEEDS, "zoo_seed": ZOO_BUILDS},
                       # described beside the claims, on build 0: the small budget
                       {"recipe": ADAPTATION_RECIPES, "budget": ["small"], "seed": SEEDS},
                   )),
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
    skip = {"output_dir", "profile", "checkpoint_every", "overwrite", "evaluate_test"}  # where and how, not what (runs.BOOKKEEPING)
    parts = [f"{k}={_fmt(v)}" for k, v in sorted(parameters.items())
             if k not in skip and k in declared and v != declared[k].default]
    name = ",".join(parts) or "default"
    return "".join(c if c.isalnum() or c in "=,.+-_" else "_" for c in name)


def start(experiment: str, namespace: dict) -> runs.Run:
    """Check the notebook's parameters (as papermill left them in `namespace`) and open its run.

    Everything a run would refuse later is refused here, before any data or model is touched:
    a name papermill injected that the notebook does not declare, a value of the wrong type or
    outside its range, an experiment's own cross-parameter rules, an `output_dir` that is a file.
    A folder that already holds a finished run is never overwritten unless `overwrite` is True.
    Without an `output_dir` (Run All in JupyterLab, a bare papermill or nbconvert run) the run
    goes to a new folder under `my_runs/` (git-ignored), so the committed results stay as they are.
    A cell that raises marks the run "failed" with the error.
    """
    spec = get(experiment)
    origin = spec.notebook.name
    declared = spec.parameters()
    unknown = sorted(set(injected_names(namespace)) - set(declared))
    if unknown:
        listing = "\n  ".join(p.describe() for p in declared.values())
        raise ParameterError(f"{origin}: unknown parameter(s) {unknown} were injected. Valid parameters:\n  {listing}")
    parameters = resolve(declared, namespace, origin=origin)
    spec.check(parameters)
    interactive = not parameters.get("output_dir")
    output_dir = interactive_output_dir(experiment, parameters) if interactive else Path(parameters["output_dir"])
    parameters = spec.resolved(parameters)  # run.json records the values the run trains with
    fileio.check_directory(output_dir, "output_dir")
    # one run writes a folder at a time: held for the kernel's life (or by the `medlib run` that started it); under
    # `accelerate launch` only the first process writes, so only it locks
    lock = runs.RunFolderLock(output_dir, allow_parent=True)
    if runs.main_process():
        lock.acquire()
    previous = runs.read_run(output_dir)
    if previous and previous.get("train_info", {}).get("status") == "finished" and not parameters.get("overwrite"):
        lock.release()
        raise ParameterError(
            f"{output_dir / runs.RUN_FILE}: holds a finished run; set overwrite = True to replace it, "
            "or choose another output_dir")
    if parameters.get("overwrite") and runs.main_process():
        runs.clear_run_folder(output_dir)  # nothing of the earlier run survives: no checkpoint to resume by mistake
    try:
        resumes = runs.check_resumable(output_dir, {**parameters, "output_dir": str(output_dir)})
    except ParameterError:
        lock.release()
        raise
    parameters["output_dir"] = str(output_dir)
    seed_everything(int(parameters.get("seed", 0)))
    if parameters.get("profile") != "paper":
        pin_threads()  # the thread count is part of what makes CPU numbers repeat (medlib.seeding)
    run = runs.Run(experiment, parameters, output_dir)
    run.lock, run.resumes = lock, resumes
    run.reads_test = reads_test(experiment, parameters, output_dir)
    runs.mark_failures_in_kernel(run)
    return run


def reads_test(experiment: str, parameters: dict, output_dir: Path) -> bool:
    """Whether a run scores the test split. Test is read once, by the committed sweep: a run into an arm folder of
    a results tree (`<results>/<experiment>/<profile>/<arm>`, what `medlib run` and `medlib sweep` write) reads it;
    any other run (my_runs/, a scratch folder) reports validation only, unless its notebook's `evaluate_test` is
    True. A notebook without that parameter always reads test."""
    if parameters.get("evaluate_test", True):
        return True
    out = Path(output_dir).resolve()
    return (out.parent.name == parameters.get("profile") and out.parent.parent.name == experiment
            and INTERACTIVE_RUNS not in out.parts)


# Cells papermill adds begin with this comment; their assignments are the injected parameters.
_PAPERMILL_HEADER = "# Parameters"


def injected_names(namespace: dict) -> list[str]:
    """The names papermill assigned in this kernel (read from IPython's input history, `In`), so a
    misspelt `-p` is refused rather than run with only papermill's warning."""
    names: list[str] = []
    for source in namespace.get("In", []) or []:
        if isinstance(source, str) and source.lstrip().startswith(_PAPERMILL_HEADER):
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign):
                    names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return names


def interactive_output_dir(experiment: str, parameters: dict) -> Path:
    """A fresh folder for a run nobody named a place for: my_runs/<experiment>/<profile>/<arm>/<time>."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return (REPO_ROOT / INTERACTIVE_RUNS / experiment / parameters.get("profile", "tiny")
            / arm_name(get(experiment).parameters(), parameters) / stamp)


INTERACTIVE_RUNS = "my_runs"
