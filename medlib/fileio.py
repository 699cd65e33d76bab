"""Atomic file writes: a killed run never leaves a file that looks finished."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    old = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(old)
    return old


# mkstemp creates its file 0600; a finished file gets the mode any other new file would.
_FILE_MODE = 0o666 & ~_umask()


def check_directory(path: str | os.PathLike, what: str) -> Path:
    """`path` must be a folder or not exist yet (nor any file in its way): refuse, naming `what`,
    before a run starts rather than deep inside it."""
    path = Path(path).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                detail = "is a file" if p == path else f"lies under {p}, which is a file"
                raise NotADirectoryError(f"{what} = {str(path)!r} {detail}; it must be a folder")
            if not os.access(p, os.W_OK):
                raise PermissionError(f"{what} = {str(path)!r}: {p} is not writable")
            break
    return path


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary file lives in the same folder so the final `os.replace` is atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp_path)` (e.g. `fig.savefig`, `torch.save`) and move the result into place."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def _json_default(obj):
    # numpy scalars and arrays, Paths: the things results usually carry.
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
