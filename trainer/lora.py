"""The trainer's only contact with the adapter core: add LoRA, read it, write it, restore it.

Everything goes through ``lorabooth.adapters``' PEFT-compatible public API, imported lazily so
full fine-tuning works without touching the adapter core.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import replace_dir

ADAPTER_NAME = "default"
# PEFT's DreamBooth example saves PeftModel-wrapped components, so its files carry this prefix;
# we match it so `PeftModel.from_pretrained(unet, "out/unet")` works.
PEFT_PREFIX = "base_model.model."


def add_lora(
    model: nn.Module, *, r: int, alpha: float, dropout: float, targets: list[str], bias: str = "none"
) -> Any:
    """Inject a fresh LoRA adapter (A Kaiming-uniform, B zero) and return its ``LoraConfig``."""
    from lorabooth.adapters import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias=bias, init_lora_weights=True
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    return config


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA weights keyed ``<module path>.lora_A.weight`` (adapter name stripped), on the CPU."""
    from lorabooth.adapters import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    from lorabooth.adapters import set_peft_model_state_dict

    set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)


def save_peft_folder(directory: Path, model: nn.Module, config: Any) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` into ``directory`` atomically."""
    from lorabooth.adapters import save_adapter_files

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        state = {PEFT_PREFIX + k: v for k, v in adapter_state_dict(model).items()}
        save_adapter_files(tmp, state, config)
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_peft_folder(directory: Path, model: nn.Module) -> None:
    """Restore the weights ``save_peft_folder`` wrote into a model that already has the adapter."""
    from lorabooth.adapters import load_adapter_files

    state, _config = load_adapter_files(directory)
    load_adapter_state_dict(model, state)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
