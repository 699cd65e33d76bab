"""What `medlib list` tells every user about a parameter is true of the code: the profile values a help text names,
and where LoRA goes."""

import re

import pytest

from medlib.experiments import EXPERIMENTS

PROFILE_HELP = re.compile(r"0: the profile's \((.*)\)")


def named_values(text: str) -> dict[str, float]:
    """{"paper": 1e-5, "tiny": 2e-3, "smoke": 2e-3} from "paper 1e-5 as MedBLIP's code; tiny / smoke 2e-3"."""
    out = {}
    for chunk in re.split(r"[;,]", text):
        m = re.match(r"\s*((?:paper|tiny|smoke)(?:\s*/\s*(?:paper|tiny|smoke))*)\s+([0-9.e-]+)", chunk)
        if m:
            for name in re.split(r"\s*/\s*", m.group(1)):
                out[name] = float(m.group(2))
    return out


def profile_value(exp, name: str, profile: str):
    if name == "image_size" and exp.name == "minigpt_med":
        from medlib.experiments.minigpt_med import image_side
        return image_side(profile)
    return exp.resolved({name: 0, "profile": profile})[name]


CASES = [(e, p) for e in EXPERIMENTS.values() for p in e.parameters().values() if PROFILE_HELP.search(p.help or "")]


def test_some_help_texts_name_profile_values():
    assert len(CASES) >= 9


@pytest.mark.parametrize("exp,param", CASES, ids=[f"{e.name}:{p.name}" for e, p in CASES])
def test_the_profile_values_a_help_text_names_are_the_ones_a_run_uses(exp, param):
    named = named_values(PROFILE_HELP.search(param.help).group(1))
    assert named, f"{exp.notebook_file}: {param.name}'s help names no profile value"
    for profile, value in named.items():
        assert profile_value(exp, param.name, profile) == pytest.approx(value), (param.name, profile)


def test_clinicalblips_llm_lora_goes_where_its_help_says():
    from medlib.experiments.clinicalblip import load_model
    from medlib.models.clinicalblip import start_stage

    help_text = EXPERIMENTS["clinicalblip"].parameters()["lora_r_llm"].help
    assert "every attention (q/k/v/o) and MLP projection" in help_text
    from medlib.data.synthcxr import build

    model, *_ = load_model("smoke", "", build(image_size=128, limit=160, progress=False))
    _, summary = start_stage(model, "stage2")
    names = {n.rsplit(".", 1)[-1] for n in summary["lora_modules"] if "language_model" in n}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names


def test_minigpt_meds_lora_goes_where_its_help_says():
    from medlib.experiments.minigpt_med import load_model

    help_text = EXPERIMENTS["minigpt_med"].parameters()["lora_r"].help
    assert "q_proj / v_proj" in help_text
    model, _, _ = load_model("smoke", lora_r=4, lora_alpha=8)
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.llm.named_parameters() if ".lora_A" in n}
    assert adapted == {"q_proj", "v_proj"}


def test_clinicalblips_vision_lora_goes_where_its_help_says():
    from medlib.data.synthcxr import build
    from medlib.experiments.clinicalblip import load_model
    from medlib.models.clinicalblip import start_stage

    assert "vision encoder's qkv" in EXPERIMENTS["clinicalblip"].parameters()["lora_r_vision"].help
    model, *_ = load_model("smoke", "", build(image_size=128, limit=160, progress=False))
    _, summary = start_stage(model, "stage1")
    lora = [n for n in summary["lora_modules"] if "vision_model" in n]
    assert lora and {n.rsplit(".", 1)[-1] for n in lora} == {"qkv"}
