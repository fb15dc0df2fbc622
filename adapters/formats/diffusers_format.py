"""diffusers' ``pytorch_lora_weights.safetensors``.

Keys are ``<part>.<module path>.lora_A.weight`` / ``.lora_B.weight`` (current), or the older
``<path>.lora.down.weight`` / ``.lora.up.weight`` and attention-processor spellings (``attn1.processor.to_q_lora``,
``to_out_lora``, ``lora_linear_layer``), with optional ``<part>.<path>.alpha`` scalars. diffusers records
each part's ``LoraConfig`` (rank/alpha patterns included) as JSON in the ``lora_adapter_metadata`` header
entry; we write it so alpha != rank and per-layer ranks survive, and read it back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .lora_file import LoraFile, LoraModule
from .names import text_path_for_installed, with_text_model_prefix
from .peft_format import pattern_value, peft_config_dict
from .safeio import FormatError, read_safetensors, write_safetensors

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"
DIFFUSERS_PARTS = ("unet", "text_encoder", "text_encoder_2")

_UP_DOWN = re.compile(
    r"^(?P<path>.+?)\.(?:lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight"
    r"|(?:lora|lora_linear_layer)\.(?P<ud>up|down)\.weight"
    r"|(?P<proc>to_q|to_k|to_v|to_out)_lora\.(?P<ud2>up|down)\.weight)$")
_TEXT_ATTN = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


def looks_like_diffusers(keys: list[str]) -> bool:
    return bool(keys) and all(_UP_DOWN.match(k) or k.endswith(".alpha") for k in keys) and not any(
        k.startswith("base_model.model.") for k in keys)


def _split_part(key: str) -> tuple[str, str]:
    for part in DIFFUSERS_PARTS:
        if key.startswith(part + "."):
            return part, key[len(part) + 1:]
    return "unet", key  # the oldest files held UNet attention processors only, unprefixed


def _module_path(part: str, m: re.Match) -> str:
    path = m.group("path")
    proc = m.group("proc")
    if proc:  # attention-processor spelling: ...attn1.processor.to_q_lora -> ...attn1.to_q
        path = re.sub(r"\.processor$", "", path)
        if part == "unet":
            return f"{path}.{proc}" + (".0" if proc == "to_out" else "")
        return f"{path}.{_TEXT_ATTN[proc]}"
    return path


def read_diffusers(file: Path) -> LoraFile:
    tensors, meta = read_safetensors(file)
    lora = LoraFile(format="diffusers", source=str(file), metadata=dict(meta))
    configs: dict[str, dict] = {}
    if METADATA_KEY in meta:
        try:
            flat = json.loads(meta[METADATA_KEY])
            for key, value in flat.items():
                part, _, field = key.partition(".")
                configs.setdefault(part, {})[field] = value
        except (json.JSONDecodeError, AttributeError, TypeError):
            lora.notes.append(f"header entry {METADATA_KEY!r} is not valid JSON; alphas default to the rank")
            configs = {}
    halves: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    alphas: dict[tuple[str, str], float] = {}
    for key, tensor in tensors.items():
        part, rest = _split_part(key)
        if rest.endswith(".alpha") and tensor.numel() == 1:
            path = rest[: -len(".alpha")]
            alphas[(part, path if part == "unet" else text_path_for_installed(path))] = float(tensor.item())
            continue
        m = _UP_DOWN.match(rest)
        if not m:
            lora.unused_keys.append(key)
            continue
        half = m.group("ab") or {"down": "A", "up": "B"}[m.group("ud") or m.group("ud2")]
        path = _module_path(part, m)
        halves.setdefault((part, path if part == "unet" else text_path_for_installed(path)), {})[half] = tensor
    uses_rslora = {bool(c.get("use_rslora")) for c in configs.values()}
    if len(uses_rslora) > 1:
        raise FormatError(f"{file}: parts disagree on use_rslora; convert them separately")
    lora.use_rslora = uses_rslora.pop() if uses_rslora else False
    for (part, path), pair in halves.items():
        if set(pair) != {"A", "B"}:
            lora.notes.append(f"{part}.{path}: lora_{next(iter(pair))} without its partner; skipped")
            lora.unused_keys.append(f"{part}.{path} (half pair)")
            continue
        rank = pair["A"].shape[0]
        cfg = configs.get(part)
        if (part, path) in alphas:
            alpha = alphas[(part, path)]
        elif cfg is not None:
            alpha = float(pattern_value(cfg.get("alpha_pattern") or {}, path, cfg.get("lora_alpha", rank)))
        else:
            alpha = float(rank)  # diffusers' convention without alphas: W + B @ A, scale 1
        lora.modules[(part, path)] = LoraModule(down=pair["A"], up=pair["B"], alpha=alpha)
    for part, path in alphas.keys() - halves.keys():
        lora.unused_keys.append(f"{part}.{path}.alpha")
    if not configs and not alphas and halves:
        lora.notes.append("no alphas in the file: scale 1 (alpha = rank) as diffusers assumes")
    return lora


def write_diffusers(lora: LoraFile, file: Path, fold_alpha: bool = False) -> list[Path]:
    """Write ``pytorch_lora_weights.safetensors`` (``file`` may be the folder).

    By default each part's LoraConfig goes into the ``lora_adapter_metadata`` header, which
    ``load_lora_weights`` uses, so alphas and per-layer ranks are exact. ``fold_alpha=True`` instead multiplies
    the scale into ``lora_B`` (alpha = rank) for tools that ignore the header; that is exact only up to rounding.
    """
    file = file / WEIGHTS_NAME if file.suffix != ".safetensors" else file
    bad = [p for p in lora.parts() if p not in DIFFUSERS_PARTS]
    if bad:
        raise FormatError(f"{file}: diffusers files hold unet/text_encoder/text_encoder_2 parts, not {bad}; "
                          "write a PEFT folder for a single model instead (--to peft)")
    tensors: dict[str, torch.Tensor] = {}
    packed: dict[str, object] = {}
    for part in lora.parts():
        for path, mod in sorted(lora.part_modules(part).items()):
            up = mod.up * mod.scale(lora.use_rslora) if fold_alpha else mod.up
            # CLIP paths keep the `text_model.` level every reader knows (transformers 5 dropped it from the
            # module names; diffusers strips it again there), so the file loads under both generations.
            key = f"{part}.{path if part == 'unet' else with_text_model_prefix(path)}"
            tensors[f"{key}.lora_A.weight"] = mod.down
            tensors[f"{key}.lora_B.weight"] = up.to(mod.up.dtype)
        if not fold_alpha:
            config = peft_config_dict(lora, part)
            config.pop("base_model_name_or_path")
            config.pop("task_type")
            packed.update({f"{part}.{k}": v for k, v in config.items()})
    meta = {"format": "pt"}
    if packed:
        meta[METADATA_KEY] = json.dumps(packed, indent=2, sort_keys=True)
    write_safetensors(file, tensors, meta)
    return [file]


__all__ = ["read_diffusers", "write_diffusers", "looks_like_diffusers", "WEIGHTS_NAME"]
