"""Put a ``LoraFile`` into a live model through the adapter core (and take it out again).

    lora = load_lora("style.safetensors")                 # any format
    load_lora_into_pipeline(pipe, lora, "style")          # pipe.unet / pipe.text_encoder(_2), duck-typed
    AdapterMixer(pipe.unet).set_adapters(["style"], [0.8])
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from .lora_file import LoraFile
from .peft_format import peft_config_dict
from .safeio import FormatError

PIPELINE_PARTS = ("unet", "text_encoder", "text_encoder_2")


def apply_lora(model: nn.Module, lora: LoraFile, part: str | None = None, adapter_name: str = "default") -> int:
    """Inject ``lora``'s modules of ``part`` into ``model`` as adapter ``adapter_name``; returns how many.

    Names are checked first: a file made for another base raises a ``FormatError`` saying which base it
    looks like, and nothing is injected.
    """
    from .. import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
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
    cfg = peft_config_dict(single, part)
    config = LoraConfig(r=cfg["r"], lora_alpha=cfg["lora_alpha"], target_modules=cfg["target_modules"],
                        rank_pattern=cfg["rank_pattern"], alpha_pattern=cfg["alpha_pattern"],
                        use_rslora=cfg["use_rslora"], inference_mode=True)
    inject_adapter_in_model(config, model, adapter_name)
    state = {f"{path}.lora_{h}.weight": t for path, m in mods.items() for h, t in (("A", m.down), ("B", m.up))}
    set_peft_model_state_dict(model, state, adapter_name)
    return len(mods)


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
