"""The zoo that ships with the repository: build 0 of every paper's tiny models in `zoo/<build>/`, in the Hugging
Face format (`save_pretrained`, safetensors), with `zoo/manifest.json` naming every file with its SHA-256 and every
weights file with the fingerprint of its tensors (names, shapes and values, whatever the file format).

- `ship(build)`: a build made in the cache, copied into `zoo/` with its manifest (what maintainers run when a zoo
  version changes; the committed results are then regenerated from it).
- `verify()`: the shipped files against the manifest (`medlib zoo verify`).
- `compare(build, paper)`: a build made here against the shipped one, tensor for tensor (`medlib zoo build`).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from importlib.metadata import version
from pathlib import Path

import torch

from medlib import fileio
from medlib.seeding import cpu_model
from medlib.zoo import SHIPPED_ZOO, ZOO_VERSION, load_state

MANIFEST = SHIPPED_ZOO / "manifest.json"
# Each paper's part of a build: the folders (relative to the build) whose files it owns.
PARTS = {"medblip": ("medblip", "tokenizer"), "minigpt_med": ("minigpt_med_",), "clinicalblip": ("clinicalblip_",),
         "adaptation": ("adaptation_",)}
WEIGHTS = (".safetensors", ".pt")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensors_fingerprint(path: Path) -> str:
    """The fingerprint of a weights file's tensors: names, dtypes, shapes and bytes, in name order. The same weights
    saved by `torch.save` or as safetensors have the same fingerprint."""
    state = load_state(path.with_suffix(".pt"))  # reads the .safetensors beside it first
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _part_of(rel: str) -> str:
    top = rel.split("/")[0]
    for paper, prefixes in PARTS.items():
        if any(top == p or (p.endswith("_") and top.startswith(p)) for p in prefixes):
            return paper
    return "shared"


def weights_files(build: Path) -> dict[str, str]:
    """{relative path without suffix: tensors fingerprint} of every weights file in a build."""
    out = {}
    for p in sorted(build.rglob("*")):
        if p.suffix in WEIGHTS and p.is_file():
            out[str(p.relative_to(build).with_suffix(""))] = tensors_fingerprint(p)
    return out


def ship(build: Path) -> Path:
    """Copy a finished cache build (build 0) into `zoo/<its name>/`, torch.save files converted to safetensors, and
    write the manifest. Replaces an earlier shipped build."""
    # imported here: only when weights are converted
    from safetensors.torch import save_file

    build = Path(build)
    if not (build / "zoo.json").exists():
        raise FileNotFoundError(f"{build}: not a finished zoo build (no zoo.json)")
    if SHIPPED_ZOO.exists():
        shutil.rmtree(SHIPPED_ZOO)
    target = SHIPPED_ZOO / build.name
    for src in sorted(build.rglob("*")):
        if not src.is_file():
            continue
        dst = target / src.relative_to(build)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".pt" and not src.with_suffix(".safetensors").exists():
            state = load_state(src)
            fileio.write_with(dst.with_suffix(".safetensors"), lambda p, s=state: save_file({k: v.contiguous() for k, v in s.items()}, str(p)))
        else:
            shutil.copyfile(src, dst)
    files = {str(p.relative_to(SHIPPED_ZOO)): {"sha256": _sha256(p), "bytes": p.stat().st_size, "part": _part_of(str(p.relative_to(target)))}
             for p in sorted(target.rglob("*")) if p.is_file()}
    manifest = {"zoo_version": ZOO_VERSION, "build": build.name, "zoo_seed": 0,
                "built_on": {"cpu": cpu_model(), "platform": platform.platform(),
                             "versions": {n: version(n) for n in ("torch", "transformers", "timm", "numpy")}},
                "weights": weights_files(target), "files": files}
    fileio.write_json(MANIFEST, manifest)
    return target


def manifest() -> dict:
    try:
        return json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{MANIFEST}: no shipped zoo in this checkout") from None


def verify() -> list[str]:
    """What is wrong with the shipped files: each missing, changed or unlisted file, named. Empty when all hold."""
    m = manifest()
    problems = []
    for rel, entry in m["files"].items():
        p = SHIPPED_ZOO / rel
        if not p.exists():
            problems.append(f"{rel}: missing")
        elif _sha256(p) != entry["sha256"]:
            problems.append(f"{rel}: changed (SHA-256 differs from the manifest)")
    listed = set(m["files"])
    problems += [f"{p.relative_to(SHIPPED_ZOO)}: not in the manifest" for p in sorted(SHIPPED_ZOO.rglob("*"))
                 if p.is_file() and p != MANIFEST and str(p.relative_to(SHIPPED_ZOO)) not in listed]
    return problems


def compare(build: Path, paper: str | None = None) -> list[tuple[str, str, str]]:
    """A build made here against the shipped one: (weights file, shipped fingerprint, this build's) for each of the
    paper's weights files (every paper's when None). Equal fingerprints: the same weights bit for bit."""
    m = manifest()
    shipped, name = m["weights"], m["build"]
    built = weights_files(Path(build))
    rows = []
    for rel, fp in shipped.items():
        inner = rel.split("/", 1)[1] if rel.startswith(name + "/") else rel
        if paper is None or _part_of(inner) in (paper, "shared"):
            rows.append((inner, fp, built.get(inner, "missing")))
    return rows
