import pytest

from medlib.experiments import arm_name, get
from medlib.params import ParameterError, check_overrides, parse_parameters

CELL = '''
profile: str = "tiny"  # [smoke|tiny|paper] model and data size
unfreeze_ratio: float = 0.3125  # [0, 1; step 0.03125] share of layers
augment: bool = True  # rewrite questions
seed: int = 0  # [0, 4294967295] seed
lr: float = 0.002  # (0, 1] learning rate
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
    assert "unfreeze_ratio (float, default 0.3125): in [0, 1; step 0.03125]" in str(err.value)


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


@pytest.mark.parametrize("name,value,why", [
    ("seed", "-1", "outside"), ("seed", "99999999999999999999999", "outside"), ("lr", "-0.5", "outside"),
    ("lr", "0", "outside"), ("lr", "nan", "not a number"), ("lr", "inf", "outside"),
    ("unfreeze_ratio", "0.3", "whole multiple of the step 0.03125"), ("unfreeze_ratio", "1.5", "outside")])
def test_value_outside_its_range_is_refused_with_the_range(name, value, why):
    with pytest.raises(ParameterError, match=why) as err:
        check_overrides(parse_parameters(CELL), {name: value})
    assert repr(name) in str(err.value)


def test_a_range_is_parsed_from_the_help_comment_and_shown():
    params = parse_parameters(CELL)
    assert str(params["lr"].range) == "(0, 1]" and params["lr"].help == "learning rate"
    assert "in [0, 4294967295]" in params["seed"].describe()
    assert check_overrides(params, {"unfreeze_ratio": "0.3125", "lr": "1"}) == {"unfreeze_ratio": 0.3125, "lr": 1.0}


def test_a_numeric_parameter_without_a_range_is_a_notebook_error():
    with pytest.raises(ParameterError, match="no valid range"):
        parse_parameters("batch_size: int = 4  # samples per step\n")


def test_every_numeric_notebook_parameter_declares_a_range():
    from medlib.experiments import EXPERIMENTS

    for spec in EXPERIMENTS.values():
        for p in spec.parameters().values():
            assert p.type not in (int, float) or p.range is not None, (spec.name, p.name)
