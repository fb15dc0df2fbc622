"""Put a ``LoraFile`` into a live model through the adapter core (and take it out again).

    lora = load_lora("style.safetensors")                 # any format
    load_lora_into_pipeline(pipe, lora, "style")          # pipe.unet / pipe.text_encoder(_2), duck-typed
    AdapterMixer(pipe.unet).set_adapters(["style"], [0.8])
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import nn

from ..layers import is_conv1d
from .lora_file import LoraFile
from .peft_format import peft_config_dict
from .safeio import FormatError

PIPELINE_PARTS = ("unet", "text_encoder", "text_encoder_2")


def apply_lora(model: nn.Module, lora: LoraFile, part: str | None = None, adapter_name: str = "default") -> int:
    """Inject ``lora``'s modules of ``part`` into ``model`` as adapter ``adapter_name``; returns how many.

    Names are checked first: a file made for another base raises a ``FormatError`` saying which base it
    looks like, and nothing is injected.
    """
    from .. import LoraConfig, inject_adapter_in_model
    from . import check_against_model

    part = part or (lora.parts()[0] if len(lora.parts()) == 1 else None)
    if part is None:
        raise FormatError(f"the adapter has parts {lora.parts()}; say which one goes into this model (part=...)")
    mods = lora.part_modules(part)
    if not mods:
        raise FormatError(f"the adapter has no {part!r} modules (it has {lora.parts()})")
    single = LoraFile(modules={(part, p): m for p, m in mods.items()}, use_rslora=lora.use_rslora,
                      source=lora.source)
    missing = check_against_model(single, {part: [n for n, _ in model.named_modules()]})
    if missing:
        raise FormatError(f"{lora.source or 'adapter'}: {len(missing)} of its {part} modules are not in this model, "
                          f"e.g. {missing[:3]}; it was made for a different base model")
    _check_shapes(model, mods, part, lora.source)
    cfg = peft_config_dict(single, part)
    # one regex of the exact paths: a single match per module instead of a suffix test per (module, target)
    targets = "|".join(re.escape(path) for path in cfg["target_modules"])
    config = LoraConfig(r=cfg["r"], lora_alpha=cfg["lora_alpha"], target_modules=targets,
                        rank_pattern=cfg["rank_pattern"], alpha_pattern=cfg["alpha_pattern"],
                        use_rslora=cfg["use_rslora"], inference_mode=True)
    # every factor is overwritten just below: skip the random init (at SD size, most of the load time)
    inject_adapter_in_model(config, model, adapter_name, skip_init=True)
    try:
        with torch.no_grad():
            for path, mod in mods.items():
                layer = model.get_submodule(path)
                layer.lora_A[adapter_name].weight.copy_(mod.down)
                layer.lora_B[adapter_name].weight.copy_(mod.up)
    except Exception:
        from ..lora_model import delete_adapter

        delete_adapter(model, adapter_name)
        raise
    return len(mods)


def _check_shapes(model: nn.Module, mods: dict, part: str, source: str) -> None:
    """LoRA factors must fit their base layers; checked before anything is injected."""
    bad = []
    for path, mod in mods.items():
        base = model.get_submodule(path)
        weight = getattr(base, "weight", None)
        if weight is None or weight.dim() not in (2, 4):
            bad.append(f"{part}.{path}: a {type(base).__name__} cannot carry a LoRA")
            continue
        out_f, in_f = weight.shape[0], weight.shape[1]
        if is_conv1d(base):  # transformers' Conv1D stores (in, out)
            in_f, out_f = out_f, in_f
        want_down = (mod.rank, in_f, *weight.shape[2:])
        want_up = (out_f, mod.rank, *((1, 1) if weight.dim() == 4 else ()))
        if tuple(mod.down.shape) != want_down or tuple(mod.up.shape) != want_up:
            bad.append(f"{part}.{path}: down {tuple(mod.down.shape)} / up {tuple(mod.up.shape)} do not fit the base "
                       f"weight {tuple(weight.shape)} (need {want_down} / {want_up})")
    if bad:
        raise FormatError(f"{source or 'adapter'}: {len(bad)} modules do not fit this model ({'; '.join(bad[:3])}); "
                          "it was made for a different base model")


def load_lora_into_pipeline(pipe: Any, source: LoraFile | str | os.PathLike, adapter_name: str = "default",
                            ) -> dict[str, int]:
    """``pipe.load_lora_weights`` for lorabooth: every part of the file into ``pipe.<part>``; returns counts."""
    from . import load_lora

    lora = source if isinstance(source, LoraFile) else load_lora(source)
    counts = {}
    for part in lora.parts():
        model = getattr(pipe, part, None)
        if model is None:
            raise FormatError(f"{lora.source or 'adapter'} has {part} weights but the pipeline has no {part}")
        counts[part] = apply_lora(model, lora, part, adapter_name)
    return counts


def remove_lora(model: nn.Module) -> nn.Module:
    """Take every LoRA layer out of ``model`` again (base weights untouched)."""
    from ..lora_model import unload_model

    return unload_model(model, merge=False)
