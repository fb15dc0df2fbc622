"""Adapter state dicts in PEFT's key format (the adapter name stripped from every key).

``get_peft_model_state_dict`` picks one adapter's tensors out of a model; ``set_peft_model_state_dict``
maps a file's keys back onto the model (re-inserting the adapter name), checks every shape first,
and only then copies — so a wrong file changes nothing.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import nn

from .errors import AdapterError, AdapterNameError, ShapeMismatchError
from .layers import LoraLayer
from .modules_to_save import ModulesToSaveWrapper

PEFT_PREFIX = "base_model.model."
_MODULE_DICTS = ("lora_A", "lora_B")
_PARAM_DICTS = ("lora_embedding_A", "lora_embedding_B")


class LoadResult(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


def _adapter_key_map(model: nn.Module, adapter_name: str) -> dict[str, str]:
    """model state-dict key -> saved key, for every tensor that belongs to ``adapter_name``."""
    mapping: dict[str, str] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, LoraLayer):
            for attr in _MODULE_DICTS:
                container = getattr(module, attr)
                if adapter_name in container:
                    for pname, _ in container[adapter_name].named_parameters():
                        mapping[f"{prefix}{attr}.{adapter_name}.{pname}"] = f"{prefix}{attr}.{pname}"
            for attr in _PARAM_DICTS:
                container = getattr(module, attr, None)
                if container is not None and adapter_name in container:
                    mapping[f"{prefix}{attr}.{adapter_name}"] = f"{prefix}{attr}"
        elif isinstance(module, ModulesToSaveWrapper) and adapter_name in module.modules_to_save:
            copy = module.modules_to_save[adapter_name]
            for key in copy.state_dict():
                mapping[f"{prefix}modules_to_save.{adapter_name}.{key}"] = f"{prefix}{key}"
    return mapping


def remove_adapter_name(key: str, adapter_name: str) -> str:
    """PEFT's saved-key rule: drop the adapter name where it is the last or second-to-last part."""
    if key.endswith(f".{adapter_name}"):
        return key[: -len(adapter_name) - 1]
    head, _, suffix = key.rpartition(".")
    if head.endswith(f".{adapter_name}"):
        return f"{head[: -len(adapter_name) - 1]}.{suffix}"
    return key


def _bias_keys(model: nn.Module, state_dict: dict[str, torch.Tensor], bias: str, others: list[str]) -> list[str]:
    if bias == "all":
        return [
            k for k in state_dict
            if (k == "bias" or k.endswith(".bias")) and not any(f".{o}." in k for o in others)
        ]
    if bias == "lora_only":
        keys = []
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer):
                key = f"{name}.base_layer.bias" if name else "base_layer.bias"
                if key in state_dict:
                    keys.append(key)
        return keys
    return []


def get_peft_model_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None, adapter_name: str = "default"
) -> dict[str, torch.Tensor]:
    """One adapter's tensors with PEFT's saved keys (``...lora_A.weight``, heads as ``<path>.weight``)."""
    peft_config = getattr(model, "peft_config", None)
    if not peft_config or adapter_name not in peft_config:
        known = list(peft_config or {})
        raise AdapterNameError(f"no adapter named {adapter_name!r} in this model (it has {known}).")
    config = peft_config[adapter_name]
    if state_dict is None:
        state_dict = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for model_key, saved_key in _adapter_key_map(model, adapter_name).items():
        if model_key in state_dict:
            out[saved_key] = state_dict[model_key]
    others = [name for name in peft_config if name != adapter_name]
    for key in _bias_keys(model, state_dict, getattr(config, "bias", "none"), others):
        out.setdefault(remove_adapter_name(key, adapter_name), state_dict[key])
    return out


def _is_peft_wrapped(model: nn.Module) -> bool:
    return any(name.startswith(PEFT_PREFIX) for name, _ in model.named_parameters())


def set_peft_model_state_dict(
    model: nn.Module,
    peft_model_state_dict: dict[str, torch.Tensor],
    adapter_name: str = "default",
) -> LoadResult:
    """Load one adapter's saved tensors into ``model`` (a ``PeftModel`` or an injected model).

    Keys may carry the ``base_model.model.`` prefix or not, whichever the model lacks. Every key
    must land on a tensor of the same shape, otherwise nothing is loaded and the error names the
    layer and both shapes. Adapter tensors the file lacks keep their initial values (a warning).
    """
    peft_config = getattr(model, "peft_config", None)
    if not peft_config or adapter_name not in peft_config:
        raise AdapterNameError(
            f"no adapter named {adapter_name!r} in this model (it has {list(peft_config or {})}); "
            "inject it first (inject_adapter_in_model / add_adapter)."
        )
    model_state = model.state_dict()
    adapter_keys = _adapter_key_map(model, adapter_name)
    saved_to_model = {remove_adapter_name(k, adapter_name): k for k in model_state}
    saved_to_model.update({saved: key for key, saved in adapter_keys.items()})
    wrapped = _is_peft_wrapped(model)
    assignments: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in peft_model_state_dict.items():
        candidates = [key]
        if not wrapped and key.startswith(PEFT_PREFIX):
            candidates.append(key[len(PEFT_PREFIX):])
        elif wrapped and not key.startswith(PEFT_PREFIX):
            candidates.append(PEFT_PREFIX + key)
        target = next((saved_to_model[c] for c in candidates if c in saved_to_model), None)
        if target is None:
            target = next((c for c in candidates if c in model_state), None)
        if target is None:
            unexpected.append(key)
        else:
            assignments[target] = value
    if unexpected:
        raise AdapterError(
            f"{len(unexpected)} adapter tensor(s) match no layer of this model, e.g. {unexpected[:3]}; "
            "the adapter was made for a different architecture or target_modules. Nothing was loaded."
        )
    mismatches = []
    for target, value in assignments.items():
        expected = tuple(model_state[target].shape)
        if tuple(value.shape) != expected:
            layer = target.rsplit(".", 1)[0]
            for marker in (".lora_A", ".lora_B", ".lora_embedding_A", ".lora_embedding_B", ".modules_to_save"):
                layer = layer.split(marker)[0]
            mismatches.append(f"{layer}: file has {tuple(value.shape)} for {target}, the model needs {expected}")
    if mismatches:
        raise ShapeMismatchError(
            "adapter weights do not fit the model (nothing was loaded): " + "; ".join(mismatches[:5])
            + (f"; and {len(mismatches) - 5} more" if len(mismatches) > 5 else "")
            + ". Check r / rank_pattern in adapter_config.json and that the base model is the one it was trained on."
        )
    with torch.no_grad():
        for target, value in assignments.items():
            dest = model_state[target]
            dest.copy_(value.to(device=dest.device, dtype=dest.dtype))
    missing = sorted(k for k in adapter_keys if k not in assignments)
    if missing:
        warnings.warn(
            f"adapter {adapter_name!r}: {len(missing)} tensor(s) were not in the file and keep their initial "
            f"values, e.g. {missing[:3]}.",
            stacklevel=2,
        )
    return LoadResult(missing_keys=missing, unexpected_keys=[])
