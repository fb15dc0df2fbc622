"""``LoraModel``: the module that owns a model's LoRA adapters (PEFT's tuner layer).

It holds the user's model as ``self.model`` (hence the ``base_model.model.`` key prefix inside a
``PeftModel``), keeps ``peft_config`` (also attached to the model itself, as PEFT does, so injected
models stay self-describing), and implements the model-wide operations: activating adapters,
freezing everything else, merging, unloading and deleting.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from .adapter_holder import adapter_name_list
from .config import LoraConfig
from .errors import AdapterNameError, MergeError
from .injection import apply_injection, get_submodule_parent, plan_injection, wrap_modules_to_save
from .layers import LoraLayer
from .modules_to_save import ModulesToSaveWrapper


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            yield name, module


def _wrappers(model: nn.Module) -> Iterator[tuple[str, ModulesToSaveWrapper]]:
    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            yield name, module


def set_active_adapters(model: nn.Module, adapter_names: str | list[str], inference_mode: bool = False) -> None:
    """Activate ``adapter_names`` on every LoRA layer and modules_to_save wrapper of ``model``."""
    names = adapter_name_list(adapter_names)
    known = getattr(model, "peft_config", None)
    if known is not None:
        missing = [name for name in names if name not in known]
        if missing:
            raise AdapterNameError(f"unknown adapter(s) {missing}; this model has {list(known)}.")
    for _, layer in lora_layers(model):
        layer.set_adapter(names, inference_mode=inference_mode)
    for _, wrapper in _wrappers(model):
        wrapper.set_adapter([n for n in names if n in wrapper.modules_to_save], inference_mode=inference_mode)


def freeze_all_but_adapters(model: nn.Module, peft_config: dict[str, LoraConfig], active: list[str]) -> None:
    """PEFT's ``_mark_only_adapters_as_trainable``: the base model freezes; the bias option may thaw biases."""
    keep: set[int] = set()
    for _, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for container in module._adapter_dicts():
                keep.update(id(p) for p in container.parameters())
        elif isinstance(module, ModulesToSaveWrapper):
            keep.update(id(p) for p in module.parameters())
    for param in model.parameters():
        if id(param) not in keep:
            param.requires_grad_(False)
    for name in active:
        bias = getattr(peft_config.get(name), "bias", "none")
        if bias == "all":
            for pname, param in model.named_parameters():
                if pname == "bias" or pname.endswith(".bias"):
                    param.requires_grad_(True)
        elif bias == "lora_only":
            for _, layer in lora_layers(model):
                if getattr(layer.base_layer, "bias", None) is not None:
                    layer.base_layer.bias.requires_grad_(True)


def inject_lora(
    model: nn.Module,
    config: LoraConfig,
    adapter_name: str,
    peft_config: dict[str, LoraConfig],
    active: list[str],
    *,
    skip_init: bool = False,
) -> None:
    """Validate, then add adapter ``adapter_name`` to ``model`` and register its config."""
    plan = plan_injection(model, config, adapter_name)
    existing_grad = [(p, p.requires_grad) for p in model.parameters()] if peft_config else []
    apply_injection(model, plan, adapter_name, skip_init=skip_init)
    peft_config[adapter_name] = plan.config
    set_active_adapters_unchecked(model, active, inference_mode=plan.config.inference_mode)
    freeze_all_but_adapters(model, peft_config, active)
    wrap_modules_to_save(model, plan.modules_to_save, adapter_name, activate=adapter_name in active)
    for _, wrapper in _wrappers(model):
        if adapter_name in wrapper.modules_to_save:
            wrapper.set_adapter([n for n in active if n in wrapper.modules_to_save],
                                inference_mode=plan.config.inference_mode)
    # Adding a second adapter must not change what the first one trains.
    for param, flag in existing_grad:
        param.requires_grad_(flag)


def set_active_adapters_unchecked(model: nn.Module, names: list[str], inference_mode: bool = False) -> None:
    for _, layer in lora_layers(model):
        layer.set_adapter(names, inference_mode=inference_mode)


def enable_adapter_layers(model: nn.Module, enabled: bool) -> None:
    for _, module in model.named_modules():
        if isinstance(module, (LoraLayer, ModulesToSaveWrapper)):
            module.enable_adapters(enabled)


def unload_model(model: nn.Module, merge: bool, safe_merge: bool = False, adapter_names: list[str] | None = None):
    """Replace every LoRA layer by its base layer (merging first if asked) and every
    modules_to_save wrapper by its active copy; returns the plain model."""
    layers = list(lora_layers(model))
    if merge:
        merge_all(layers, safe_merge=safe_merge, adapter_names=adapter_names)
    else:
        for _, layer in layers:
            layer.unmerge()
    for name, layer in layers:
        parent, child = get_submodule_parent(model, name)
        setattr(parent, child, layer.base_layer)
    for name, wrapper in list(_wrappers(model)):
        parent, child = get_submodule_parent(model, name)
        setattr(parent, child, wrapper.active_module() if merge else wrapper.original_module)
    if "peft_config" in model.__dict__:
        del model.__dict__["peft_config"]
    return model


def merge_all(layers: list[tuple[str, LoraLayer]], safe_merge: bool, adapter_names: list[str] | None) -> None:
    """Merge every layer, or none: with ``safe_merge`` every layer is checked before any is changed."""
    if safe_merge:
        for name, layer in layers:
            try:
                layer.check_safe_merge(adapter_names)
            except MergeError as err:
                raise MergeError(f"{name}: {err}") from None
    for _, layer in layers:
        layer.merge(adapter_names=adapter_names)


def merge_adapters(model: nn.Module, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
    """Merge the active (or named) adapters into the base weights of every LoRA layer of ``model``."""
    merge_all(list(lora_layers(model)), safe_merge=safe_merge, adapter_names=adapter_names)


def unmerge_adapters(model: nn.Module) -> None:
    for _, layer in lora_layers(model):
        layer.unmerge()


def active_adapters_of(model: nn.Module) -> list[str]:
    """The adapters active on the first LoRA layer (all layers agree unless set by hand)."""
    for _, layer in lora_layers(model):
        return layer.active_adapters
    return []


def delete_adapter(model: nn.Module, adapter_name: str) -> list[str]:
    """Remove ``adapter_name`` from every layer and from ``model.peft_config``; returns the new active list."""
    peft_config = getattr(model, "peft_config", {})
    if adapter_name not in peft_config:
        raise AdapterNameError(f"no adapter named {adapter_name!r}; this model has {list(peft_config)}.")
    active = [name for name in active_adapters_of(model) if name != adapter_name]
    del peft_config[adapter_name]
    for _, layer in lora_layers(model):
        layer.delete_adapter(adapter_name)
    for _, wrapper in _wrappers(model):
        wrapper.delete_adapter(adapter_name)
    if not active and peft_config:
        active = [next(iter(peft_config))]
    if active:
        set_active_adapters(model, active)
    return active


class LoraModel(nn.Module):
    """Holds ``model`` with LoRA injected; forwards calls (and unknown attributes) to it."""

    prefix = "lora_"

    def __init__(self, model: nn.Module, config: LoraConfig, adapter_name: str = "default", *,
                 skip_init: bool = False) -> None:
        super().__init__()
        self.model = model
        self.peft_config: dict[str, LoraConfig] = dict(getattr(model, "peft_config", {}) or {})
        self.active_adapter: str | list[str] = adapter_name
        inject_lora(model, config, adapter_name, self.peft_config, [adapter_name], skip_init=skip_init)
        self.model.peft_config = self.peft_config

    @property
    def active_adapters(self) -> list[str]:
        return [self.active_adapter] if isinstance(self.active_adapter, str) else list(self.active_adapter)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self.model, name)

    # -- adapters ------------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, config: LoraConfig) -> None:
        """Add a new, inactive adapter (the active one keeps training)."""
        inject_lora(self.model, config, adapter_name, self.peft_config, self.active_adapters)
        self.model.peft_config = self.peft_config

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        set_active_adapters(self.model, adapter_name, inference_mode=inference_mode)
        self.active_adapter = adapter_name

    def delete_adapter(self, adapter_name: str) -> None:
        remaining = delete_adapter(self.model, adapter_name)
        self.active_adapter = remaining[0] if len(remaining) == 1 else remaining

    def enable_adapter_layers(self) -> None:
        enable_adapter_layers(self.model, True)

    def disable_adapter_layers(self) -> None:
        for name in self.active_adapters:
            if getattr(self.peft_config.get(name), "bias", "none") != "none":
                warnings.warn(
                    f"adapter {name!r} trains biases (bias={self.peft_config[name].bias!r}); disabling the adapter "
                    "cannot undo those, so outputs differ from the base model's.",
                    stacklevel=2,
                )
        enable_adapter_layers(self.model, False)

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        self.disable_adapter_layers()
        try:
            yield
        finally:
            self.enable_adapter_layers()

    # -- merging -------------------------------------------------------------------------------
    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        merge_adapters(self.model, adapter_names=adapter_names, safe_merge=safe_merge)

    def unmerge_adapter(self) -> None:
        unmerge_adapters(self.model)

    def merge_and_unload(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> nn.Module:
        return unload_model(self.model, merge=True, safe_merge=safe_merge, adapter_names=adapter_names)

    def unload(self) -> nn.Module:
        return unload_model(self.model, merge=False)

    # -- mixing (the formulas live in lorabooth.adapters.mixing) ---------------------------------
    def add_weighted_adapter(self, adapters: list[str], weights: list[float], adapter_name: str,
                             combination_type: str = "svd", **kwargs: Any) -> Any:
        """PEFT's ``add_weighted_adapter`` (all 11 combination types); returns a ``MixReport``."""
        from .mixing import add_weighted_adapter

        return add_weighted_adapter(self, adapters, weights, adapter_name, combination_type=combination_type,
                                    **kwargs)

    def set_adapters(self, adapter_names: str | list[str], weights: float | list[float] | None = None) -> None:
        """Several active adapters with per-adapter weights, nothing merged (diffusers' ``set_adapters``)."""
        from .mixing import set_adapters

        set_adapters(self.model, adapter_names, weights)
        self.active_adapter = adapter_names if isinstance(adapter_names, str) else list(adapter_names)

    def fuse_lora(self, lora_scale: float = 1.0, adapter_names: list[str] | None = None) -> list[str]:
        """Fold adapters into the base weights with ``lora_scale``; ``unfuse_lora`` takes them out again."""
        from .mixing import fuse

        return fuse(self.model, adapter_names, scale=lora_scale)

    def unfuse_lora(self) -> None:
        from .mixing import unfuse

        unfuse(self.model)
