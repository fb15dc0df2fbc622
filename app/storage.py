"""The app's data folder: safe names, atomic writes, and the folder layout.

Everything the app keeps (jobs, adapters, uploads, previews) lives under one data folder.
Names typed by users pass through :func:`safe_name` and every path is re-checked with
:func:`inside` so that ``../x`` or ``/etc/passwd`` can never address a file outside it.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

from lorabooth.adapters.serialization import atomic_write_bytes

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 64


class UnsafeNameError(ValueError):
    """A user-supplied name that would escape the data folder or is empty after cleaning."""


def safe_name(raw: str) -> str:
    """Turn a user-typed name into one path component: letters, digits, ``.``, ``_``, ``-``.

    Separators and ``..`` are removed rather than interpreted, so ``../../etc`` becomes ``etc``
    and ``/abs/path`` becomes ``abs_path``. An empty result is an error, not a silent default.
    """
    text = unicodedata.normalize("NFKC", str(raw)).strip()
    text = _NAME_OK.sub("_", text.replace("/", "_").replace("\\", "_"))
    text = re.sub(r"\.{2,}", "_", text).strip("._-")[:MAX_NAME]
    if not text:
        raise UnsafeNameError(f"name {raw!r} has no usable characters; use letters, digits, '-', '_' or '.'")
    return text


def inside(root: Path, *parts: str) -> Path:
    """``root / parts`` resolved, refusing any result outside ``root`` (symlinks included)."""
    root = Path(root).resolve()
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise UnsafeNameError(f"path {'/'.join(parts)!r} leaves the data folder {root}")
    return path


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


class DataDir:
    """The layout of the data folder; sub-folders are created on first use."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        for sub in ("jobs", "adapters", "uploads", "previews", "exports", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def previews(self) -> Path:
        return self.root / "previews"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"


def default_data_dir() -> Path:
    """``$LORABOOTH_DATA``, else ``/data/lorabooth`` on a Space with persistent storage, else ``./data``."""
    env = os.environ.get("LORABOOTH_DATA")
    if env:
        return Path(env)
    if Path("/data").is_dir() and os.access("/data", os.W_OK):
        return Path("/data/lorabooth")
    return Path("data")
