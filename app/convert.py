"""The app's bridge to the adapter core's formats: read any LoRA file, write the gallery layout, export.

All format knowledge lives in ``lorabooth.adapters.formats``; this module only chooses which
reader/writer to call, splits adapters into one PEFT folder per model part, and checks keys and
shapes against a base model before anything lands in the gallery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"


class ConvertError(ValueError):
    """An adapter that cannot be read, written or matched to the base model."""


def read_gallery_folder(folder: Path):
    """The canonical ``LoraFile`` of a gallery entry (PEFT sub-folders per part)."""
    from lorabooth.adapters.formats.peft_format import read_peft

    return read_peft(Path(folder))


def read_any(path: Path, base_parts: dict[str, torch.nn.Module] | None = None):
    """Read a ``.safetensors`` LoRA in any supported format (PEFT, diffusers, kohya/A1111).

    With the base model's parts, kohya's flattened names are mapped onto its real module names.
    """
    from lorabooth.adapters.formats import load_lora

    module_names = None
    if base_parts:
        module_names = {part: [n for n, _ in model.named_modules() if n] for part, model in base_parts.items()}
    try:
        return load_lora(Path(path), module_names=module_names)
    except Exception as exc:  # the formats layer names the key; keep its message
        raise ConvertError(f"{Path(path).name}: {exc}") from exc


def split_parts(lora) -> dict[str, Any]:
    """One ``LoraFile`` per model part (``unet``, ``text_encoder``...), keeping rsLoRA and metadata."""
    from lorabooth.adapters.formats.lora_file import LoraFile

    out = {}
    for part in lora.parts():
        sub = LoraFile(use_rslora=lora.use_rslora, format=lora.format, metadata=dict(lora.metadata))
        sub.modules = {(part, path): mod for path, mod in lora.part_modules(part).items()}
        out[part] = sub
    return out


def write_gallery_parts(lora, staging: Path, base_model: str | None = None) -> dict[str, Path]:
    """Write ``staging/<part>/`` PEFT folders for every part of ``lora``; returns ``{part: folder}``."""
    from lorabooth.adapters.formats.peft_format import write_peft

    parts = {}
    for part, sub in split_parts(lora).items():
        if part == "model":
            raise ConvertError("this LoRA is for a single model (an LLM?), not a Stable Diffusion pipeline")
        write_peft(sub, staging / part, base_model=base_model)
        parts[part] = staging / part
    return parts


def check_against_base(lora, base_parts: dict[str, torch.nn.Module]) -> None:
    """Every LoRA module must name a layer of the base model with matching shapes; the first mismatch is reported."""
    for (part, path), mod in sorted(lora.modules.items()):
        model = base_parts.get(part)
        if model is None:
            raise ConvertError(f"the LoRA adapts {part!r} but the base model has only {sorted(base_parts)}")
        try:
            layer = model.get_submodule(path)
        except AttributeError:
            raise ConvertError(
                f"{part}.{path}: no such layer in the base model; this LoRA was made for a different model"
            ) from None
        weight = getattr(layer, "weight", None)
        if weight is None or weight.dim() not in (2, 4):
            raise ConvertError(f"{part}.{path}: a {type(layer).__name__} layer cannot carry a LoRA")
        out_f, in_f = weight.shape[0], weight.shape[1]
        rank = mod.rank
        want_down = (rank, in_f, *weight.shape[2:]) if weight.dim() == 4 else (rank, in_f)
        want_up = (out_f, rank, 1, 1) if weight.dim() == 4 else (out_f, rank)
        if tuple(mod.down.shape) != want_down or tuple(mod.up.shape) != want_up:
            raise ConvertError(
                f"{part}.{path}: LoRA shapes down {tuple(mod.down.shape)} / up {tuple(mod.up.shape)} do not fit the "
                f"base layer weight {tuple(weight.shape)} (expected {want_down} / {want_up}); "
                "pick the base model this LoRA was trained for"
            )


def file_to_peft_folders(path: Path, staging: Path, base_parts: dict[str, torch.nn.Module] | None = None,
                         base_model: str | None = None) -> dict[str, Path]:
    lora = read_any(path, base_parts)
    if not lora.modules:
        raise ConvertError(f"{Path(path).name}: no LoRA weights found (unrecognised keys: {lora.unused_keys[:3]})")
    if base_parts is not None:
        check_against_base(lora, base_parts)
    return write_gallery_parts(lora, staging, base_model)


def _gallery_lora(parts: dict[str, Path]):
    if not parts:
        raise ConvertError("the adapter has no unet/ or text_encoder/ folder")
    folder = next(iter(parts.values())).parent
    return read_gallery_folder(folder)


def peft_folders_to_diffusers(parts: dict[str, Path], target: Path) -> Path:
    """diffusers' ``pytorch_lora_weights.safetensors`` (``unet.``/``text_encoder.`` keys)."""
    from lorabooth.adapters.formats import save_lora

    save_lora(_gallery_lora(parts), Path(target), "diffusers")
    return Path(target)


def peft_folders_to_kohya(parts: dict[str, Path], target: Path, meta: dict | None = None) -> Path:
    """kohya/A1111/ComfyUI ``.safetensors`` (``lora_unet_...lora_down.weight`` + ``.alpha``)."""
    from lorabooth.adapters.formats import save_lora

    meta = meta or {}
    save_lora(_gallery_lora(parts), Path(target), "kohya", base_model=meta.get("base_model") or None,
              trigger_words=[meta["trigger_words"]] if meta.get("trigger_words") else None)
    return Path(target)


def describe(folder: Path) -> dict:
    """r/alpha per part and parameter count of a gallery folder, for ``meta.json``."""
    lora = read_gallery_folder(folder)
    info: dict[str, Any] = {"parts": lora.parts(), "num_parameters": lora.num_parameters()}
    for part in lora.parts():
        r, alpha = lora.common_rank_alpha(part)
        prefix = "" if part == "unet" else f"{part}_"
        info[f"{prefix}r"] = r
        info[f"{prefix}lora_alpha"] = int(alpha) if float(alpha).is_integer() else alpha
    return info
