"""kohya_ss / A1111 / ComfyUI single files: ``lora_unet_<flat path>.lora_down.weight``, ``.lora_up.weight``, ``.alpha``.

Text encoders are ``lora_te_`` (SD 1.x/2.x) or ``lora_te1_`` / ``lora_te2_`` (SDXL). Training facts live in
``ss_*`` header strings (kohya's) and ``modelspec.*`` ones (Stability's model spec), which A1111 and ComfyUI show.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from .lora_file import LoraFile, LoraModule
from .names import (
    flat_index,
    flatten,
    guess_base,
    resolve_flat_name,
    sgm_to_diffusers,
    text_path_for_installed,
    with_text_model_prefix,
)
from .safeio import FormatError, read_safetensors, write_safetensors

_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
             "lora_te2_": "text_encoder_2"}
_KEY = re.compile(r"^(lora_unet_|lora_te1_|lora_te2_|lora_te_)([^.]+)\.(lora_down\.weight|lora_up\.weight|alpha)$")
_RSLORA_ALPHAS = "lorabooth_rslora_alphas"

_BASE_VERSION = {"SD1": "sd_v1", "SD2": "sd_v2", "SDXL": "sdxl_base_v1-0"}
_ARCH = {"SD1": "stable-diffusion-v1/lora", "SD2": "stable-diffusion-v2-512/lora",
         "SDXL": "stable-diffusion-xl-v1-base/lora"}


def looks_like_kohya(keys: list[str]) -> bool:
    return any(k.startswith(tuple(_PREFIXES)) for k in keys)


def read_kohya(file: Path, module_names: dict[str, Iterable[str]] | None = None) -> LoraFile:
    """Read a kohya-style file. ``module_names`` (part -> the model's module paths) makes name mapping exact;
    without it names are unflattened from the SD/SDXL/CLIP vocabulary (see ``names.py``)."""
    tensors, meta = read_safetensors(file)
    lora = LoraFile(format="kohya", source=str(file), metadata=dict(meta))
    indexes = {part: flat_index(names) for part, names in (module_names or {}).items()}
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        m = _KEY.match(key)
        if not m:
            lora.unused_keys.append(key)
            continue
        groups.setdefault((m.group(1), m.group(2)), {})[m.group(3)] = tensor
    if any(k.endswith((".dora_scale", "hada_w1_a", "lokr_w1")) for k in lora.unused_keys):
        lora.notes.append("DoRA / LyCORIS (LoHa, LoKr) tensors are not plain LoRA; they were not converted")
    rslora_alphas = _json_or_none(meta.get(_RSLORA_ALPHAS))
    lora.use_rslora = rslora_alphas is not None
    for (prefix, flat), group in groups.items():
        if "lora_down.weight" not in group or "lora_up.weight" not in group:
            lora.unused_keys.extend(f"{prefix}{flat}.{k}" for k in group)
            lora.notes.append(f"{prefix}{flat}: lora_down/lora_up pair incomplete; skipped")
            continue
        part = _PREFIXES[prefix]
        index = indexes.get(part)
        if index is not None and flat not in index and flat.startswith("text_model_"):
            flat = flat[len("text_model_"):]  # a transformers-5 CLIP model has no text_model wrapper
        path = resolve_flat_name(flat, index)
        if part == "unet" and (index is None or flat not in index):
            path = sgm_to_diffusers(path)
        if part != "unet" and index is None:
            path = text_path_for_installed(path)
        if index is not None and flat not in index and path not in set(index.values()):
            lora.notes.append(f"{prefix}{flat}: no module of that name in the given {part}; kept as {path!r}")
        down, up = group["lora_down.weight"], group["lora_up.weight"]
        if "alpha" in group:
            alpha = float(group["alpha"].float().item() if group["alpha"].dtype == torch.bfloat16
                          else group["alpha"].item())
        else:
            alpha = float(down.shape[0])  # kohya's rule: no alpha means alpha = rank (scale 1)
        if rslora_alphas is not None and f"{part}.{path}" in rslora_alphas:
            alpha = float(rslora_alphas[f"{part}.{path}"])
        lora.modules[(part, path)] = LoraModule(down=down, up=up, alpha=alpha)
    return lora


def _json_or_none(text: str | None):
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _alpha_tensor(alpha: float) -> torch.Tensor:
    # float32 like kohya unless that would round the value; float64 keeps it exact then
    t = torch.tensor(alpha, dtype=torch.float32)
    return t if float(t.item()) == alpha else torch.tensor(alpha, dtype=torch.float64)


def kohya_metadata(lora: LoraFile, base_model: str | None = None, trigger_words: list[str] | None = None,
                   training: dict | None = None, title: str | None = None) -> dict[str, str]:
    """``ss_*`` and ``modelspec.*`` strings: base model, rank, alpha, trigger words, training settings."""
    meta = {k: v for k, v in lora.metadata.items() if k.startswith(("ss_", "modelspec.", "lorabooth_"))}
    rank, alpha = lora.common_rank_alpha()
    base = guess_base(lora.modules)
    meta.update({"ss_network_module": "networks.lora", "ss_network_dim": str(rank),
                 "ss_network_alpha": str(_clean(alpha)), "modelspec.sai_model_spec": "1.0.0"})
    meta.pop(_RSLORA_ALPHAS, None)
    if base in _BASE_VERSION:
        meta["ss_base_model_version"] = _BASE_VERSION[base]
        meta["modelspec.architecture"] = _ARCH[base]
    if base_model:
        meta["ss_sd_model_name"] = base_model
    if title:
        meta["ss_output_name"] = title
        meta["modelspec.title"] = title
    if trigger_words:
        meta["modelspec.trigger_phrase"] = ", ".join(trigger_words)
        # A1111 shows ss_tag_frequency as the "training tags"; one pseudo-folder holds the trigger words
        meta["ss_tag_frequency"] = json.dumps({"trigger": {w: 1 for w in trigger_words}})
    meta["ss_network_args"] = json.dumps({"conv_dim": str(rank)} if any(
        m.down.dim() == 4 and m.down.shape[2:] != (1, 1) for m in lora.modules.values()) else {})
    for key, value in (training or {}).items():
        meta[key if key.startswith("ss_") else f"ss_{key}"] = str(value)
    return meta


def _clean(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def write_kohya(lora: LoraFile, file: Path, base_model: str | None = None,
                trigger_words: list[str] | None = None, training: dict | None = None) -> list[Path]:
    """Write a kohya/A1111/ComfyUI file. Alphas are stored exactly; rsLoRA scales are re-expressed as kohya
    alphas (``alpha * sqrt(r)``) and the original alphas kept in the header so lorabooth reads them back."""
    two_text_encoders = "text_encoder_2" in lora.parts()
    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te1_" if two_text_encoders else "lora_te_",
                "text_encoder_2": "lora_te2_"}
    other = [p for p in lora.parts() if p not in prefixes]
    if other:
        raise FormatError(f"{file}: kohya files hold Stable Diffusion parts (unet, text encoders), not {other}; "
                          "write this adapter as a PEFT folder instead (--to peft)")
    tensors: dict[str, torch.Tensor] = {}
    rslora: dict[str, float] = {}
    for (part, path), mod in sorted(lora.modules.items()):
        name = prefixes[part] + flatten(path if part == "unet" else with_text_model_prefix(path))
        alpha = mod.alpha * math.sqrt(mod.rank) if lora.use_rslora else mod.alpha
        if lora.use_rslora:
            rslora[f"{part}.{path}"] = mod.alpha
        tensors[f"{name}.lora_down.weight"] = mod.down
        tensors[f"{name}.lora_up.weight"] = mod.up
        tensors[f"{name}.alpha"] = _alpha_tensor(alpha)
    meta = kohya_metadata(lora, base_model, trigger_words, training, title=file.stem)
    if rslora:
        meta[_RSLORA_ALPHAS] = json.dumps(rslora, sort_keys=True)
    write_safetensors(file, tensors, meta)
    return [file]
