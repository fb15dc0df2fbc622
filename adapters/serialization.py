"""The PEFT on-disk layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

Writes are atomic (temporary file in the same folder, then ``os.replace``) so a crash never leaves a
half-written adapter behind. Reads never unpickle: safetensors first, and an old ``adapter_model.bin``
only through ``torch.load(weights_only=True)``. A pickle where safetensors is expected is refused.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import AdapterFileError

if TYPE_CHECKING:
    from .config import PeftConfig

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_WEIGHTS_NAME = "adapter_model.safetensors"
BIN_WEIGHTS_NAME = "adapter_model.bin"


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then move it into place with ``os.replace``.

    The one place lorabooth writes files: a crash or Ctrl-C leaves the old file or none, never half of one.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # ".name.XXXX.tmp": hidden, and no reader mistakes a leftover for a real .png/.safetensors
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(path, write)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(path, write)


def save_safetensors(
    state_dict: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Save tensors atomically as safetensors (contiguous, unshared copies where needed)."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in state_dict.items():
        tensor = tensor.detach()
        # safetensors refuses tensors that share storage (tied weights); give each its own copy.
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        if ptr in seen or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        seen.add(ptr)
        tensors[key] = tensor.cpu()
    meta = {"format": "pt", **(metadata or {})}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _sniff(path: str) -> str:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:2] == b"PK":
        return "a zip archive (torch.save / pickle format)"
    if head[:1] == b"\x80":
        return "a Python pickle"
    return "not a safetensors file"


def load_state_dict_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load adapter weights without ever unpickling arbitrary objects.

    ``.safetensors`` files must really be safetensors (a pickle renamed to ``.safetensors`` is
    refused); anything else is treated as an old ``.bin`` and read with ``weights_only=True``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AdapterFileError(f"{path}: adapter weights not found.")
    if path.endswith(".safetensors"):
        try:
            return load_file(path, device=str(device))
        except (SafetensorError, OSError, ValueError) as err:
            raise AdapterFileError(
                f"{path}: expected safetensors but this is {_sniff(path)}; lorabooth never unpickles "
                "safetensors-named files. Re-save it with safetensors (save_pretrained does) or rename an "
                f"old PEFT checkpoint to {BIN_WEIGHTS_NAME}. ({err})"
            ) from err
    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, ... for unsafe/broken files
        raise AdapterFileError(
            f"{path}: cannot be read safely with torch.load(weights_only=True) ({type(err).__name__}: {err}). "
            "Convert it to safetensors in a trusted environment."
        ) from err
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise AdapterFileError(f"{path}: expected a dict of tensors, got {type(loaded).__name__}.")
    return loaded


def find_weights_file(directory: str | os.PathLike) -> str:
    """The adapter weights inside ``directory``: safetensors preferred, old ``.bin`` accepted."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise AdapterFileError(f"{directory}: adapter directory not found.")
    for name in (SAFETENSORS_WEIGHTS_NAME, BIN_WEIGHTS_NAME):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    raise AdapterFileError(
        f"{directory}: no {SAFETENSORS_WEIGHTS_NAME} (or old {BIN_WEIGHTS_NAME}) in this folder; "
        f"found {sorted(os.listdir(directory))}."
    )


def save_adapter_files(
    directory: str | os.PathLike, state_dict: dict[str, torch.Tensor], config: PeftConfig
) -> None:
    """Write one adapter in PEFT's layout: weights first, then the config (so a config implies weights)."""
    os.makedirs(directory, exist_ok=True)
    save_safetensors(state_dict, os.path.join(directory, SAFETENSORS_WEIGHTS_NAME))
    config.save_pretrained(directory)


def load_adapter_files(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], PeftConfig]:
    """Read one adapter saved in PEFT's layout: ``(state_dict, config)``."""
    from .config import PeftConfig

    config = PeftConfig.from_pretrained(directory)
    return load_state_dict_file(find_weights_file(directory), device=device), config
