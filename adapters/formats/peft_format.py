"""PEFT folders: ``adapter_config.json`` + ``adapter_model.safetensors`` (keys ``base_model.model.<path>.lora_A.weight``).

A folder holds one adapter for one model. Named sub-adapters live in sub-folders; lorabooth writes a
multi-part (UNet + text encoders) adapter as sub-folders named after the parts, and reads both layouts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .lora_file import PARTS, LoraFile, LoraModule
from .names import guess_part, text_path_for_installed
from .safeio import FormatError, atomic_write_bytes, read_safetensors, write_safetensors

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
LEGACY_WEIGHTS_NAME = "adapter_model.bin"
_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$")


def is_peft_folder(path: Path) -> bool:
    return path.is_dir() and ((path / CONFIG_NAME).is_file() or any(
        (path / p / CONFIG_NAME).is_file() for p in PARTS))


def list_named_adapters(folder: Path) -> list[str]:
    """Sub-folder adapters of a PEFT folder (names other than the pipeline parts)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in PARTS and is_peft_folder(p))


def pattern_value(patterns: dict, path: str, default):
    """PEFT's rule: the first pattern ``key`` with ``re.match(rf"(.*\\.)?({key})$", path)`` wins."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", path):
            return value
    return default


_KEPT_META = ("ss_", "modelspec.", "lorabooth_")  # kohya/A1111 facts carried through PEFT files


def _load_weights(folder: Path, lora: LoraFile | None = None) -> dict[str, torch.Tensor]:
    if (folder / WEIGHTS_NAME).is_file():
        tensors, meta = read_safetensors(folder / WEIGHTS_NAME)
        if lora is not None:
            lora.metadata.update({k: v for k, v in meta.items() if k.startswith(_KEPT_META)})
        return tensors
    if (folder / LEGACY_WEIGHTS_NAME).is_file():
        try:  # old adapters: tensors only, never arbitrary pickled objects
            return torch.load(folder / LEGACY_WEIGHTS_NAME, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise FormatError(f"{folder / LEGACY_WEIGHTS_NAME}: cannot read it safely ({exc}); "
                              "re-save the adapter as safetensors") from None
    raise FormatError(f"{folder}: has {CONFIG_NAME} but no {WEIGHTS_NAME}; copy the weights file next to it")


def read_peft_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{folder / CONFIG_NAME}: not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise FormatError(f"{folder / CONFIG_NAME}: must hold a JSON object")
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise FormatError(f"{folder / CONFIG_NAME}: peft_type {peft_type!r} is not LoRA; only LoRA adapters "
                          "can be converted between formats")
    return config


def read_peft_part(folder: Path, lora: LoraFile, part: str | None) -> None:
    config = read_peft_config(folder)
    tensors = _load_weights(folder, lora)
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        m = _KEY.match(key)
        if m and "lora_embedding" not in key:
            halves.setdefault(m.group(1), {})[m.group(2)] = tensor
        else:
            lora.unused_keys.append(f"{folder.name}/{key}")
    try:
        default_alpha = float(config.get("lora_alpha", 8))
        alpha_pattern = dict(config.get("alpha_pattern") or {})
    except (TypeError, ValueError):
        raise FormatError(f"{folder / CONFIG_NAME}: lora_alpha/alpha_pattern are not numbers") from None
    use_rslora = bool(config.get("use_rslora", False))
    if lora.modules and use_rslora != lora.use_rslora:
        raise FormatError(f"{folder}: mixes rsLoRA and plain LoRA parts; convert them separately")
    lora.use_rslora = use_rslora
    if part is None:
        part = guess_part(halves)
    if part in ("text_encoder", "text_encoder_2"):  # accept both CLIP spellings (transformers 4 and 5)
        halves = {text_path_for_installed(p): v for p, v in halves.items()}
    for path, pair in halves.items():
        if set(pair) != {"A", "B"}:
            lora.unused_keys.extend(f"{folder.name}/{_PREFIX}{path}.lora_{h}.weight" for h in pair)
            lora.notes.append(f"{path}: has lora_{next(iter(pair))} without its partner; skipped")
            continue
        alpha = float(pattern_value(alpha_pattern, path, default_alpha))
        lora.modules[(part, path)] = LoraModule(down=pair["A"], up=pair["B"], alpha=alpha)
    for key in ("base_model_name_or_path", "task_type"):
        if config.get(key):
            lora.metadata.setdefault(f"peft_{key}", str(config[key]))


def read_peft(folder: Path, adapter_name: str | None = None, part: str | None = None) -> LoraFile:
    """Read a PEFT folder (or one of its named sub-adapters) into canonical form."""
    lora = LoraFile(format="peft", source=str(folder))
    if adapter_name and adapter_name != "default":
        if adapter_name in PARTS or not is_peft_folder(folder / adapter_name):
            raise FormatError(f"{folder}: no sub-adapter {adapter_name!r}; "
                              f"available: {['default', *list_named_adapters(folder)]}")
        folder = folder / adapter_name
    if (folder / CONFIG_NAME).is_file():
        read_peft_part(folder, lora, part)
    else:
        for p in PARTS:
            if (folder / p / CONFIG_NAME).is_file():
                read_peft_part(folder / p, lora, p)
        lora.format = "peft (one sub-folder per pipeline part)"
    others = list_named_adapters(folder)
    if others:
        lora.notes.append(f"other named adapters in this folder (not read): {others}")
    return lora


def peft_config_dict(lora: LoraFile, part: str, base_model: str | None = None) -> dict:
    """A PEFT ``LoraConfig`` dict reproducing every module's rank and alpha exactly."""
    mods = lora.part_modules(part)
    r, alpha = lora.common_rank_alpha(part)
    rank_pattern = {p: m.rank for p, m in sorted(mods.items()) if m.rank != r}
    alpha_pattern = {p: _num(m.alpha) for p, m in sorted(mods.items()) if m.alpha != alpha}
    return {
        "alpha_pattern": alpha_pattern,
        "base_model_name_or_path": base_model or lora.metadata.get("peft_base_model_name_or_path")
        or lora.metadata.get("ss_sd_model_name"),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "lora_alpha": _num(alpha),
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": r,
        "rank_pattern": rank_pattern,
        "target_modules": sorted(mods),
        "task_type": lora.metadata.get("peft_task_type"),
        "use_dora": False,
        "use_rslora": lora.use_rslora,
    }


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


def peft_state_dict(lora: LoraFile, part: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path, mod in sorted(lora.part_modules(part).items()):
        out[f"{_PREFIX}{path}.lora_A.weight"] = mod.down
        out[f"{_PREFIX}{path}.lora_B.weight"] = mod.up
    return out


def write_peft(lora: LoraFile, folder: Path, base_model: str | None = None) -> list[Path]:
    """Write the PEFT layout; one part -> top level, several parts -> one sub-folder per part."""
    parts = lora.parts()
    if not parts:
        raise FormatError(f"{folder}: nothing to write, the adapter has no LoRA modules")
    written = []
    for part in parts:
        target = folder if len(parts) == 1 else folder / part
        config = json.dumps(peft_config_dict(lora, part, base_model), indent=2, sort_keys=True) + "\n"
        meta = {"format": "pt", **{k: v for k, v in lora.metadata.items() if k.startswith(_KEPT_META)}}
        write_safetensors(target / WEIGHTS_NAME, peft_state_dict(lora, part), meta)
        atomic_write_bytes(target / CONFIG_NAME, config.encode())
        written += [target / WEIGHTS_NAME, target / CONFIG_NAME]
    return written
