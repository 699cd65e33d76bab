import pytest

from medlib.experiments import arm_name, get
from medlib.params import ParameterError, check_overrides, parse_parameters

CELL = '''
profile: str = "tiny"  # [smoke|tiny|paper] model and data size
unfreeze_ratio: float = 0.3125  # share of layers
augment: bool = True  # rewrite questions
seed: int = 0  # seed
tasks: list = ["detection", "vqa"]  # training mixture
'''


def test_parameters_cell_gives_type_default_help_and_choices():
    params = parse_parameters(CELL)
    assert params["unfreeze_ratio"].type is float and params["unfreeze_ratio"].default == 0.3125
    assert params["profile"].choices == ("smoke", "tiny", "paper")
    assert params["augment"].help == "rewrite questions"


def test_unknown_parameter_is_refused_with_the_valid_list():
    with pytest.raises(ParameterError) as err:
        check_overrides(parse_parameters(CELL), {"unfreeze_rate": "0.5"})
    assert "unknown parameter 'unfreeze_rate'" in str(err.value)
    assert "unfreeze_ratio (float, default 0.3125)" in str(err.value)


@pytest.mark.parametrize("name,value", [("seed", "one"), ("unfreeze_ratio", "abc"), ("augment", "maybe"), ("seed", 1.5)])
def test_wrong_type_is_refused(name, value):
    with pytest.raises(ParameterError, match=name):
        check_overrides(parse_parameters(CELL), {name: value})


def test_command_line_strings_are_converted():
    out = check_overrides(parse_parameters(CELL), {"seed": "3", "augment": "false", "unfreeze_ratio": "1", "tasks": "vqa,refer"})
    assert out == {"seed": 3, "augment": False, "unfreeze_ratio": 1.0, "tasks": ["vqa", "refer"]}


def test_value_outside_choices_is_refused():
    with pytest.raises(ParameterError, match="allowed: smoke, tiny, paper"):
        check_overrides(parse_parameters(CELL), {"profile": "huge"})


def test_a_parameter_without_help_is_a_notebook_bug():
    with pytest.raises(ParameterError, match="no help comment"):
        parse_parameters("seed: int = 0\n")


def test_every_notebook_has_a_valid_parameters_cell():
    for name in ("data_tour", "medblip"):
        params = get(name).parameters()
        assert "profile" in params and "output_dir" in params and "seed" in params


def test_arm_name_names_only_what_differs_from_the_defaults():
    declared = get("medblip").parameters()
    defaults = {k: p.default for k, p in declared.items()}
    assert arm_name(declared, defaults) == "default"
    assert arm_name(declared, {**defaults, "unfreeze_ratio": 0.25, "seed": 2}) == "seed=2,unfreeze_ratio=0.25"
