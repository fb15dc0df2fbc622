"""Finding target modules by name and swapping them for LoRA layers.

Matching follows PEFT exactly, because users' configs must select the same layers here as there:
a list entry matches a full module name or a name ending in ``.<entry>``; a string is a regex that
must match the full name; ``exclude_modules`` and ``modules_to_save`` win over targets;
``layers_to_transform`` keeps only the given block indices. Everything is validated before the
model is touched, so a bad config leaves the model exactly as it was.
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass

from torch import nn

from .config import LoraConfig
from .errors import AdapterNameError, ConfigError, TargetNotFoundError, UnsupportedModuleError
from .layers import SUPPORTED_TYPES_HELP, LoraLayer, is_conv1d, make_lora_layer
from .modules_to_save import ModulesToSaveWrapper
from .targets import default_modules_to_save, default_target_modules


class _Excluded:
    """Marker: the module matched an exclusion (exclude_modules or modules_to_save)."""


EXCLUDED = _Excluded()


def match_target(config: LoraConfig, key: str) -> bool | _Excluded:
    """Whether module ``key`` is a LoRA target under ``config`` (PEFT's rules)."""
    exclude = config.exclude_modules
    if exclude:
        if isinstance(exclude, str):
            if re.fullmatch(exclude, key):
                return EXCLUDED
        elif key in exclude or any(key.endswith(f".{name}") for name in exclude):
            return EXCLUDED
    if config.modules_to_save and any(re.match(rf"(^|.*\.){m}($|\..*)", key) for m in config.modules_to_save):
        return EXCLUDED
    targets = config.target_modules
    if targets is None:
        return False
    if isinstance(targets, str):
        return re.fullmatch(targets, key) is not None
    if key in targets:
        return True
    found = any(key.endswith(f".{name}") for name in targets)
    layers = config.layers_to_transform
    if found and layers is not None and (not isinstance(layers, list) or layers):
        return _layer_index(key, config.layers_pattern) in ([layers] if isinstance(layers, int) else layers)
    return found


def _layer_index(key: str, layers_pattern: list[str] | str | None) -> int | None:
    # The first numbered segment is the block index (a later one could be, e.g., an expert index).
    if not layers_pattern:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
    else:
        match = None
        for pattern in [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern:
            match = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", key)
            if match:
                break
    return int(match.group("idx")) if match else None


def pattern_value(patterns: dict, key: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: first pattern that matches a dotted suffix of ``key``."""
    for pattern in patterns:
        if re.match(rf"(.*\.)?({pattern})$", key):
            return patterns[pattern]
    return default


def get_submodule_parent(model: nn.Module, key: str) -> tuple[nn.Module, str]:
    parent_name, _, child = key.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def _wrapped_prefixes(model: nn.Module) -> list[str]:
    return [f"{name}." for name, m in model.named_modules() if isinstance(m, (LoraLayer, ModulesToSaveWrapper))]


def closest_module_names(model: nn.Module, wanted: list[str] | str, limit: int = 8) -> list[str]:
    """Module names (leaf names and full paths) that look like what the user asked for."""
    full = [name for name, _ in model.named_modules() if name]
    leaves = sorted({name.rsplit(".", 1)[-1] for name in full})
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    out: list[str] = []
    for item in wanted:
        pool = full if "." in item or isinstance(wanted, str) else leaves
        for cand in difflib.get_close_matches(item, pool, n=4, cutoff=0.5):
            if cand not in out:
                out.append(cand)
    if not out:  # nothing similar: show the adaptable layers so the user can pick
        out = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                      if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)) or is_conv1d(m)})
    return out[:limit]


@dataclass
class InjectionPlan:
    """What injecting one adapter will do, computed without touching the model."""

    config: LoraConfig
    targets: list[tuple[str, int, float]]  # (module name, r, lora_alpha)
    modules_to_save: list[str]


def resolve_config(model: nn.Module, config: LoraConfig) -> LoraConfig:
    """Fill ``target_modules`` (and, with it, ``modules_to_save``) from the architecture table."""
    if not isinstance(config, LoraConfig):
        raise ConfigError(f"expected a LoraConfig, got {type(config).__name__}; lorabooth implements LoRA only.")
    if config.target_modules is None:
        defaults = default_target_modules(model)
        if defaults is None:
            arch = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
            raise ConfigError(
                f"target_modules is None and there is no default for {arch!r}; pass target_modules=[...] "
                f"(e.g. {closest_module_names(model, ['q_proj', 'v_proj'])})."
            )
        config.target_modules = defaults
        if config.modules_to_save is None:
            config.modules_to_save = default_modules_to_save(model)
    return config


def plan_injection(model: nn.Module, config: LoraConfig, adapter_name: str) -> InjectionPlan:
    """Validate ``config`` against ``model`` and list the layers to wrap; raises before any change."""
    if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
        raise AdapterNameError(f"adapter name {adapter_name!r} must be a non-empty string without '.'.")
    if adapter_name in getattr(model, "peft_config", {}):
        raise AdapterNameError(
            f"an adapter named {adapter_name!r} is already in this model; pick another adapter_name "
            "or delete_adapter() it first."
        )
    config = resolve_config(model, config)
    skip = _wrapped_prefixes(model)
    targets: list[tuple[str, int, float]] = []
    excluded = unmatched = 0
    unsupported: list[str] = []
    for key, module in model.named_modules():
        if not key or any(key.startswith(prefix) for prefix in skip):
            continue
        result = match_target(config, key)
        if result is EXCLUDED:
            excluded += 1
            continue
        if not result:
            unmatched += 1
            continue
        base = module.base_layer if isinstance(module, LoraLayer) else module
        if not (isinstance(base, (nn.Linear, nn.Conv2d, nn.Embedding)) or is_conv1d(base)):
            unsupported.append(f"{key} ({type(module).__name__})")
            continue
        if isinstance(base, nn.Conv2d) and base.groups != 1:
            unsupported.append(f"{key} (Conv2d with groups={base.groups})")
            continue
        r = pattern_value(config.rank_pattern, key, config.r)
        alpha = pattern_value(config.alpha_pattern, key, config.lora_alpha)
        targets.append((key, r, alpha))
    if unsupported:
        raise UnsupportedModuleError(
            f"target_modules={config.target_modules!r} matched modules LoRA cannot wrap: {', '.join(unsupported[:8])}. "
            f"Supported: {SUPPORTED_TYPES_HELP}; narrow target_modules to those layers."
        )
    if not targets:
        if excluded and not unmatched:
            raise TargetNotFoundError(
                "every matching module was excluded by exclude_modules / modules_to_save; check those fields."
            )
        hint = closest_module_names(model, config.target_modules)
        extra = f" (layers_to_transform={config.layers_to_transform})" if config.layers_to_transform is not None else ""
        raise TargetNotFoundError(
            f"target_modules={config.target_modules!r}{extra} matched no module of {type(model).__name__}. "
            f"Closest module names: {hint}."
        )
    for field_name in ("rank_pattern", "alpha_pattern"):
        patterns = getattr(config, field_name)
        unused = [p for p in patterns if not any(re.match(rf"(.*\.)?({p})$", key) for key, _, _ in targets)]
        if unused:
            warnings.warn(f"{field_name} keys {unused} match no targeted module and are ignored.", stacklevel=3)
    if config.exclude_modules and not excluded:
        warnings.warn(f"exclude_modules={config.exclude_modules!r} excluded nothing; check the names.", stacklevel=3)
    return InjectionPlan(config=config, targets=targets, modules_to_save=list(config.modules_to_save or []))


def apply_injection(model: nn.Module, plan: InjectionPlan, adapter_name: str, *, skip_init: bool = False) -> list[str]:
    """Wrap each planned target (or add the adapter to an existing LoRA layer); returns the names.

    ``skip_init``: leave the adapter's factors uninitialised (see ``LoraLayer.update_layer``)."""
    config = plan.config
    for key, r, alpha in plan.targets:
        module = model.get_submodule(key)
        if isinstance(module, LoraLayer):
            layer = module
        else:
            layer = make_lora_layer(module, fan_in_fan_out=config.fan_in_fan_out)
        layer.update_layer(
            adapter_name,
            r,
            alpha,
            lora_dropout=config.lora_dropout,
            init_lora_weights=config.init_lora_weights,
            use_rslora=config.use_rslora,
            skip_init=skip_init,
        )
        if layer is not module:
            parent, child = get_submodule_parent(model, key)
            setattr(parent, child, layer)
    return [key for key, _, _ in plan.targets]


def wrap_modules_to_save(model: nn.Module, names: list[str], adapter_name: str, activate: bool) -> list[str]:
    """PEFT's ``_set_trainable``: wrap every module whose name ends with one of ``names``."""
    if not names:
        return []
    wrapped = []
    for key, _ in list(model.named_modules(remove_duplicate=False)):
        if not key or not any(key.endswith(name) for name in names):
            continue
        target = model.get_submodule(key)
        parent, child = get_submodule_parent(model, key)
        if isinstance(parent, nn.ModuleDict) and isinstance(target, nn.Module):
            grand_name = key.rsplit(".", 2)[0] if key.count(".") >= 2 else ""
            grand = model.get_submodule(grand_name) if grand_name else model
            if isinstance(grand, (LoraLayer, ModulesToSaveWrapper)):
                continue  # an adapter's own sub-module whose name happens to match
        if any(isinstance(model.get_submodule(p), ModulesToSaveWrapper) for p in _ancestors(key)):
            continue
        if isinstance(target, ModulesToSaveWrapper):
            target.update(adapter_name)
        else:
            if isinstance(target, LoraLayer):
                raise UnsupportedModuleError(f"{key} is a LoRA layer and cannot also be in modules_to_save.")
            wrapper = ModulesToSaveWrapper(target, adapter_name)
            if not activate:
                wrapper.set_adapter([])
            setattr(parent, child, wrapper)
        wrapped.append(key)
    return wrapped


def _ancestors(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]
