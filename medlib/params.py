"""Notebook parameters: read them from the papermill `parameters` cell and check overrides.

A parameters cell holds one annotated literal per line, with the help text as a comment:

    unfreeze_ratio: float = 0.3125  # fraction of OPT decoder layers whose fc1/fc2 train
    profile: str = "tiny"  # [smoke|tiny|paper] model and data size

A comment that starts with `[a|b|c]` lists the only values allowed; one that starts with an
interval gives a number's valid range, closed `[lo, hi]` or open `(lo, hi)` at either end, `inf`
for no bound, and optionally the step the value must be a whole multiple of:

    seed: int = 0  # [0, 4294967295] seeds data order, initialisation and bootstrap
    lr: float = 0.002  # (0, 1] AdamW peak learning rate
    unfreeze_ratio: float = 0.3125  # [0, 1; step 0.03125] share of OPT decoder layers that train

papermill itself only warns about unknown names and never checks types, so `medlib run` /
`sweep` check here first, and each notebook checks its own values again after papermill's
injection (`medlib.experiments.start`), before any data or model is touched.
"""

from __future__ import annotations

import ast
import io
import json
import math
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": list}
_CHOICES = re.compile(r"^\[([^\]]+)\]\s*")
_NUMBER = r"[-+]?(?:inf|\d+(?:\.\d*)?(?:e[-+]?\d+)?)"
_RANGE = re.compile(rf"^([\[(])\s*({_NUMBER})\s*,\s*({_NUMBER})\s*(?:;\s*step\s+({_NUMBER})\s*)?([\])])\s*")


@dataclass(frozen=True)
class Range:
    """A number's valid interval (each end open or closed) and an optional step it must be a multiple of."""
    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    step: float | None = None

    def __str__(self) -> str:
        def end(v):
            return "inf" if math.isinf(v) else str(int(v)) if v == int(v) else f"{v:g}"
        step = f"; step {self.step:g}" if self.step else ""
        return f"{'(' if self.lo_open else '['}{end(self.lo)}, {end(self.hi)}{step}{')' if self.hi_open else ']'}"

    def problem(self, value) -> str | None:
        """Why `value` lies outside the range, or None."""
        if isinstance(value, float) and math.isnan(value):
            return "is not a number"
        below = value <= self.lo if self.lo_open else value < self.lo
        above = value >= self.hi if self.hi_open else value > self.hi
        if below or above:
            return f"lies outside {self}"
        if self.step:
            k = round((value - self.lo) / self.step)
            if not math.isclose(self.lo + k * self.step, value, rel_tol=0, abs_tol=1e-9):
                return f"is not a whole multiple of the step {self.step:g} (nearest: {self.lo + k * self.step:g})"
        return None


class ParameterError(ValueError):
    """A parameter name or value that the notebook does not accept."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: type
    default: object
    help: str
    choices: tuple[str, ...] = field(default=())
    range: Range | None = None

    def describe(self) -> str:
        allowed = f" one of {'|'.join(self.choices)};" if self.choices else f" in {self.range};" if self.range else ""
        return f"{self.name} ({self.type.__name__}, default {self.default!r}):{allowed} {self.help}"


def parameters_cell(notebook_path: str | Path) -> str:
    nb = json.loads(Path(notebook_path).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell["source"]
            return "".join(source) if isinstance(source, list) else source
    raise ParameterError(f"{notebook_path}: no code cell tagged 'parameters'")


def parse_parameters(source: str, origin: str = "<parameters cell>") -> dict[str, Parameter]:
    """Parse a parameters cell into `{name: Parameter}`, refusing anything but annotated literals."""
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    params: dict[str, Parameter] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # a docstring-like string is harmless
            raise ParameterError(f"{origin}, line {node.lineno}: only `name: type = literal  # help` lines belong here")
        name = node.target.id
        type_name = ast.unparse(node.annotation)
        if type_name not in TYPES:
            raise ParameterError(f"{origin}: parameter {name!r} has type {type_name!r}; use one of {sorted(TYPES)}")
        try:
            default = ast.literal_eval(node.value)
        except ValueError as err:
            raise ParameterError(f"{origin}: parameter {name!r} must have a literal default") from err
        help_text = comments.get(node.lineno, "")
        if not help_text:
            raise ParameterError(f"{origin}: parameter {name!r} has no help comment")
        choices: tuple[str, ...] = ()
        valid_range = None
        r = _RANGE.match(help_text)
        m = None if r else _CHOICES.match(help_text)
        if r:
            if type_name not in ("int", "float"):
                raise ParameterError(f"{origin}: parameter {name!r} of type {type_name} cannot have a numeric range")
            valid_range = Range(float(r.group(2)), float(r.group(3)), r.group(1) == "(", r.group(5) == ")",
                                float(r.group(4)) if r.group(4) else None)
            help_text = help_text[r.end():]
        elif m:
            choices = tuple(c.strip() for c in m.group(1).split("|"))
            help_text = help_text[m.end():]
        elif type_name in ("int", "float"):
            raise ParameterError(f"{origin}: numeric parameter {name!r} has no valid range: start its help with e.g. [0, inf)")
        param = Parameter(name, TYPES[type_name], default, help_text, choices, valid_range)
        _check_value(param, default, origin)
        params[name] = param
    return params


def notebook_parameters(notebook_path: str | Path) -> dict[str, Parameter]:
    return parse_parameters(parameters_cell(notebook_path), origin=str(notebook_path))


def convert(param: Parameter, raw: str):
    """Turn a command-line string into the parameter's type, or raise ParameterError."""
    t = param.type
    try:
        if t is str:
            value = raw
        elif t is bool:
            low = raw.strip().lower()
            if low not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError
            value = low in {"true", "1", "yes"}
        elif t is int:
            value = int(raw)
        elif t is float:
            value = float(raw)
        else:  # list: JSON / Python literal, or comma-separated words
            stripped = raw.strip()
            value = ast.literal_eval(stripped) if stripped.startswith("[") else [v.strip() for v in stripped.split(",") if v.strip()]
    except (ValueError, SyntaxError) as err:
        raise ParameterError(f"parameter {param.name!r} expects {t.__name__}, got {raw!r}") from err
    return value


def _check_value(param: Parameter, value, origin: str = "") -> None:
    where = f"{origin}: " if origin else ""
    ok = isinstance(value, param.type) and not (param.type is int and isinstance(value, bool))
    if param.type is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ParameterError(f"{where}parameter {param.name!r} expects {param.type.__name__}, got {value!r} ({type(value).__name__})")
    if param.choices:
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if str(v) not in param.choices]
        if bad:
            raise ParameterError(f"{where}parameter {param.name!r} got {bad[0]!r}; allowed: {', '.join(param.choices)}")
    if param.range:
        why = param.range.problem(value)
        if why:
            raise ParameterError(f"{where}parameter {param.name!r} = {value!r} {why}: {param.help}")


def check_overrides(declared: dict[str, Parameter], overrides: dict, origin: str = "") -> dict:
    """Return `overrides` converted to the declared types; unknown names or bad values raise."""
    checked = {}
    for name, value in overrides.items():
        if name not in declared:
            listing = "\n  ".join(p.describe() for p in declared.values())
            raise ParameterError(f"{origin}: unknown parameter {name!r}. Valid parameters:\n  {listing}")
        param = declared[name]
        if isinstance(value, str) and param.type is not str:
            value = convert(param, value)
        if param.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        _check_value(param, value, origin)
        checked[name] = value
    return checked


def resolve(declared: dict[str, Parameter], namespace: dict, origin: str = "") -> dict:
    """The values a notebook runs with: the declared names looked up in its namespace, checked."""
    values = {name: namespace.get(name, p.default) for name, p in declared.items()}
    return {**{n: p.default for n, p in declared.items()}, **check_overrides(declared, values, origin)}


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_common(parameters: dict, origin: str) -> None:
    """Rules every notebook shares: a device torch can name."""
    device = parameters.get("device")
    if device is not None and not _DEVICE.match(str(device)):
        raise ParameterError(f"{origin}: parameter 'device' = {device!r}; use auto, cpu, cuda, cuda:N or mps")


def require_paths(parameters: dict, names: dict[str, str], origin: str) -> None:
    """Each `name` (a parameter) must name an existing file ("file") or folder ("dir")."""
    for name, kind in names.items():
        value = parameters.get(name, "")
        if not value:
            raise ParameterError(f"{origin}: the {parameters.get('profile')} profile needs parameter {name!r} (a {kind})")
        path = Path(value).expanduser()
        if kind == "file" and not path.is_file():
            raise ParameterError(f"{origin}: parameter {name!r} = {value!r}: " + ("is a folder, not a file" if path.is_dir() else "no such file"))
        if kind == "dir" and not path.is_dir():
            raise ParameterError(f"{origin}: parameter {name!r} = {value!r}: " + ("is a file, not a folder" if path.exists() else "no such folder"))
