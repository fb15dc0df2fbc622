"""LoRA layers: a frozen base module plus named low-rank adapters.

The attribute layout mirrors PEFT's exactly (``base_layer``, ``lora_A[name]``, ``lora_B[name]``,
``lora_dropout[name]``, ``scaling[name]``; ``lora_embedding_A/B[name]`` for embeddings) because the
state-dict keys are the file format. The forward path is kept lean: the active adapters are
resolved once into a tuple when they change, and a zero dropout is skipped, not called.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .adapter_holder import AdapterHolder, adapter_name_list
from .errors import AdapterNameError, MergeError, UnsupportedModuleError


def is_conv1d(module: nn.Module) -> bool:
    """transformers' GPT-2 ``Conv1D`` (a linear layer storing its weight as (in, out)), duck-typed."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def _new_module(module_cls: type[nn.Module], *args: Any, skip_init: bool, **kwargs: Any) -> nn.Module:
    # torch's skip_init builds on the meta device, then allocates: no init, no random numbers drawn.
    if skip_init:
        return torch.nn.utils.skip_init(module_cls, *args, **kwargs)
    return module_cls(*args, **kwargs)


class _ScalingDict(dict):
    """``scaling`` that keeps the layer's cached forward path in step when code outside this module
    rescales an adapter in place (``layer.scaling[name] *= w``, as diffusers-style helpers do)."""

    def __init__(self, owner: LoraLayer) -> None:
        super().__init__()
        self.__dict__["_owner"] = owner

    def _changed(self) -> None:
        owner = self.__dict__.get("_owner")
        if owner is not None and "_active_path" in owner.__dict__:
            owner._refresh_active_path()

    def __setitem__(self, key: str, value: float) -> None:
        super().__setitem__(key, value)
        self._changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._changed()


class LoraLayer(AdapterHolder):
    """Base of every LoRA layer: adapter bookkeeping, activation, merge / unmerge."""

    adapter_layer_names: tuple[str, ...] = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = _ScalingDict(self)
        self.use_rslora: dict[str, bool] = {}
        self.lora_dropout = nn.ModuleDict()
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.merged_adapters: list[str] = []
        # (lora_A, lora_B, dropout-or-None, scaling) for each active adapter present here.
        self._active_path: tuple[tuple[Any, Any, Any, float], ...] = ()

    # -- adapter bookkeeping -------------------------------------------------------------------
    def get_base_layer(self) -> nn.Module:
        return self.base_layer

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base_layer, "bias", None)

    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    @property
    def adapter_names(self) -> list[str]:
        return list(self.r)

    def _adapter_dicts(self) -> Iterable[nn.Module]:
        for name in self.adapter_layer_names:
            container = getattr(self, name, None)
            if container is not None:
                yield container

    def set_adapter(
        self, adapter_names: str | list[str], inference_mode: bool = False, *, keep_grad: bool = False
    ) -> None:
        """Activate ``adapter_names``; their weights train unless ``inference_mode``, all others freeze.

        With ``keep_grad`` only the forward path switches and every ``requires_grad`` stays as it is:
        changing the mix between generations must not change what a later training run trains.
        """
        names = adapter_name_list(adapter_names)
        if not keep_grad:
            for container in self._adapter_dicts():
                for key, item in container.items():
                    item.requires_grad_(key in names and not inference_mode)
        self._active_adapter = names
        self._refresh_active_path()

    def enable_adapters(self, enabled: bool) -> None:
        self._disable_adapters = not enabled

    def _refresh_active_path(self) -> None:
        path = []
        for name in self._active_adapter:
            try:
                dropout = self.lora_dropout[name]
                path.append(self._adapter_entry(name, None if isinstance(dropout, nn.Identity) else dropout))
            except KeyError:  # not on this layer, or still being built by update_layer
                continue
        self._active_path = tuple(path)

    def _adapter_entry(self, name: str, dropout: nn.Module | None) -> tuple[Any, Any, Any, float]:
        return (self.lora_A[name], self.lora_B[name], dropout, self.scaling[name])

    # -- adding an adapter --------------------------------------------------------------------
    def update_layer(
        self,
        adapter_name: str,
        r: int,
        lora_alpha: float,
        lora_dropout: float = 0.0,
        init_lora_weights: bool | str = True,
        use_rslora: bool = False,
        *,
        skip_init: bool = False,
    ) -> None:
        """Add adapter ``adapter_name`` of rank ``r``; it becomes active if nothing else is.

        ``skip_init=True`` leaves the new factors uninitialised (no random numbers drawn, whatever
        ``init_lora_weights`` says): only for callers that overwrite them right away, e.g. when
        loading a file, where the random init would be most of the load time.
        """
        if adapter_name in self.r:
            raise AdapterNameError(f"adapter {adapter_name!r} already exists on this layer.")
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.use_rslora[adapter_name] = use_rslora
        self.scaling[adapter_name] = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
        self.lora_dropout[adapter_name] = nn.Dropout(p=lora_dropout) if lora_dropout > 0.0 else nn.Identity()
        # Same construction order as PEFT so that a fixed seed gives the same initial numbers.
        self._add_factors(adapter_name, r, skip_init)
        if init_lora_weights is not False and not skip_init:
            self._init_factors(adapter_name, r, init_lora_weights)
        self._finish_update(adapter_name)

    def _add_factors(self, adapter_name: str, r: int, skip_init: bool) -> None:
        self.lora_A[adapter_name], self.lora_B[adapter_name] = self._new_factors(r, skip_init)

    def _new_factors(self, r: int, skip_init: bool) -> tuple[nn.Module, nn.Module]:
        """The (A, B) modules of a new rank-``r`` adapter, A built first."""
        raise NotImplementedError

    def _factors(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_A[adapter_name].weight, self.lora_B[adapter_name].weight

    def _init_factors(self, adapter_name: str, r: int, init_lora_weights: bool | str) -> None:
        a, b = self._factors(adapter_name)
        if init_lora_weights is True:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        else:  # "gaussian"
            nn.init.normal_(a, std=1 / r)
        nn.init.zeros_(b)

    def _finish_update(self, adapter_name: str) -> None:
        weight = self.base_layer.weight
        for container in self._adapter_dicts():
            if adapter_name in container:
                item = container[adapter_name]
                if isinstance(item, nn.Parameter):
                    item.data = item.data.to(weight.device)
                else:
                    item.to(weight.device)
        if not self._active_adapter:
            self._active_adapter = [adapter_name]
        self.set_adapter(self._active_adapter)

    def set_scale(self, adapter_name: str, scale: float) -> None:
        """Multiply the adapter's ``lora_alpha / r`` scaling by ``scale`` (PEFT's ``set_scale``)."""
        if adapter_name not in self.r:
            return
        base = self.lora_alpha[adapter_name] / (
            math.sqrt(self.r[adapter_name]) if self.use_rslora[adapter_name] else self.r[adapter_name]
        )
        self.scaling[adapter_name] = scale * base
        self._refresh_active_path()

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name in self.merged_adapters:
            raise MergeError(f"adapter {adapter_name!r} is merged into the base weights; unmerge() before deleting it.")
        for container in self._adapter_dicts():
            if adapter_name in container:
                del container[adapter_name]
        for attr in ("r", "lora_alpha", "scaling", "use_rslora"):
            getattr(self, attr).pop(adapter_name, None)
        if adapter_name in self.lora_dropout:
            del self.lora_dropout[adapter_name]
        if adapter_name in self._active_adapter:
            remaining = [name for name in self._active_adapter if name != adapter_name]
            if not remaining and self.r:
                remaining = [next(iter(self.r))]
            self._active_adapter = remaining
        self._refresh_active_path()

    # -- merging -------------------------------------------------------------------------------
    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """What merging adds to the base weight: ``scaling * B A``, in the base weight's layout."""
        a, b, dtype = self._cast_delta(*self._factors(adapter_name))
        return (self._compose(a, b) * self.scaling[adapter_name]).to(dtype)

    def _compose(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``B A`` shaped like the base weight."""
        raise NotImplementedError

    def _to_merge(self, adapter_names: list[str] | None) -> list[str]:
        names = self.active_adapters if adapter_names is None else list(adapter_names)
        return [n for n in names if n in self.r and n not in self.merged_adapters]

    def check_safe_merge(self, adapter_names: list[str] | None = None) -> None:
        """Raise ``MergeError`` if merging would put NaN/Inf into the base weight; changes nothing."""
        weight = self.base_layer.weight
        merged = weight.data.clone()
        for name in self._to_merge(adapter_names):
            merged += self.get_delta_weight(name).to(weight.dtype)
            if not torch.isfinite(merged).all():
                raise MergeError(
                    f"merging adapter {name!r} would put NaN/Inf into the base weights; they were left unchanged."
                )

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Fold the (active, or named) adapters into the base weight; ``safe_merge`` refuses NaN/Inf."""
        if safe_merge:
            self.check_safe_merge(adapter_names)
        weight = self.base_layer.weight
        for name in self._to_merge(adapter_names):
            weight.data += self.get_delta_weight(name).to(weight.dtype)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Subtract merged adapters again, newest first."""
        weight = self.base_layer.weight
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            weight.data -= self.get_delta_weight(name).to(weight.dtype)

    def _cast_delta(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
        # Half-precision matmuls on CPU are slow and lossy: merge in float32 there, cast back after.
        dtype = a.dtype
        if a.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
            return a.float(), b.float(), dtype
        return a, b, dtype

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._disable_adapters and self.merged_adapters:
            self.unmerge()
        result = self.base_layer(x, *args, **kwargs)
        if self._disable_adapters or self.merged_adapters or not self._active_path:
            return result
        return self._add_adapter_outputs(result, x)

    def _add_adapter_outputs(self, result: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for lora_A, lora_B, dropout, scaling in self._active_path:
            h = x if x.dtype == lora_A.weight.dtype else x.to(lora_A.weight.dtype)
            if dropout is not None:
                h = dropout(h)
            # In place, scaled in the same kernel: the base output is not needed by its own backward
            # (linear/conv keep their input and weight), so this saves two full-size temporaries.
            result.add_(lora_B(lora_A(h)), alpha=scaling)
        return result

    def extra_repr(self) -> str:
        return f"adapters={list(self.r)}, active={self._active_adapter}"


class Linear(LoraLayer):
    """LoRA around ``nn.Linear`` (or, with ``fan_in_fan_out``, transformers' ``Conv1D``)."""

    def __init__(self, base_layer: nn.Module, fan_in_fan_out: bool = False) -> None:
        super().__init__(base_layer)
        if is_conv1d(base_layer):
            if not fan_in_fan_out and type(self) is Linear:
                warnings.warn("fan_in_fan_out=False but the target is a Conv1D (weight stored (in, out)); using True.",
                              stacklevel=3)
            fan_in_fan_out = True  # PEFT forces this too
            self.in_features, self.out_features = base_layer.weight.shape
        elif isinstance(base_layer, nn.Linear):
            if fan_in_fan_out:
                warnings.warn("fan_in_fan_out=True but the target is an nn.Linear; using False.", stacklevel=3)
            fan_in_fan_out = False
            self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        else:
            raise UnsupportedModuleError(f"lora.Linear cannot wrap {type(base_layer).__name__}.")
        self.fan_in_fan_out = fan_in_fan_out

    def _new_factors(self, r: int, skip_init: bool) -> tuple[nn.Module, nn.Module]:
        return (
            _new_module(nn.Linear, self.in_features, r, bias=False, skip_init=skip_init),
            _new_module(nn.Linear, r, self.out_features, bias=False, skip_init=skip_init),
        )

    def _compose(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        delta = b @ a
        return delta.T if self.fan_in_fan_out else delta


class Conv1D(Linear):
    """LoRA around transformers' GPT-2 ``Conv1D``: a ``Linear`` whose base weight is (in, out)."""

    def __init__(self, base_layer: nn.Module, fan_in_fan_out: bool = True) -> None:
        if not is_conv1d(base_layer):
            raise UnsupportedModuleError(f"lora.Conv1D wraps transformers' Conv1D, not {type(base_layer).__name__}.")
        super().__init__(base_layer, fan_in_fan_out=True)


class Conv2d(LoraLayer):
    """LoRA around ``nn.Conv2d``: A is a conv with the base kernel/stride/padding, B a 1x1 conv."""

    def __init__(self, base_layer: nn.Conv2d) -> None:
        super().__init__(base_layer)
        if base_layer.groups != 1:
            raise UnsupportedModuleError(
                f"LoRA on a grouped Conv2d (groups={base_layer.groups}) is not supported; leave it out of target_modules."
            )
        self.in_features, self.out_features = base_layer.in_channels, base_layer.out_channels

    def _new_factors(self, r: int, skip_init: bool) -> tuple[nn.Module, nn.Module]:
        base = self.base_layer
        return (
            _new_module(nn.Conv2d, self.in_features, r, base.kernel_size, base.stride, base.padding, bias=False,
                        skip_init=skip_init),
            _new_module(nn.Conv2d, r, self.out_features, (1, 1), (1, 1), bias=False, skip_init=skip_init),
        )

    def _compose(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.base_layer.weight.shape[2:4] == (1, 1):
            return (b.squeeze(3).squeeze(2) @ a.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3)
        # Compose the two convolutions into one kernel: (out, r, 1, 1) * (r, in, k, k) -> (out, in, k, k).
        return F.conv2d(a.transpose(0, 1), b).transpose(0, 1)


class Embedding(LoraLayer):
    """LoRA around ``nn.Embedding``: ``lora_embedding_A`` (r, vocab) and ``lora_embedding_B`` (dim, r)."""

    def __init__(self, base_layer: nn.Embedding) -> None:
        super().__init__(base_layer)
        self.lora_embedding_A = nn.ParameterDict()
        self.lora_embedding_B = nn.ParameterDict()
        self.in_features, self.out_features = base_layer.num_embeddings, base_layer.embedding_dim

    def _add_factors(self, adapter_name: str, r: int, skip_init: bool) -> None:
        new = torch.empty if skip_init else torch.randn
        self.lora_embedding_A[adapter_name] = nn.Parameter(new((r, self.in_features)))
        self.lora_embedding_B[adapter_name] = nn.Parameter(new((self.out_features, r)))

    def _factors(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lora_embedding_A[adapter_name], self.lora_embedding_B[adapter_name]

    def _init_factors(self, adapter_name: str, r: int, init_lora_weights: bool | str) -> None:
        # PEFT (after loralib): A zero, B normal, whatever the init flavour.
        a, b = self._factors(adapter_name)
        nn.init.zeros_(a)
        nn.init.normal_(b)

    def _adapter_entry(self, name: str, dropout: nn.Module | None) -> tuple[Any, Any, Any, float]:
        # Parameters are looked up by name at call time: a bare Parameter could be swapped out
        # (load_state_dict(assign=True)) behind a cached reference, a module could not.
        return (name, None, None, self.scaling[name])

    def _compose(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (b @ a).T

    def _add_adapter_outputs(self, result: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        for name, _, _, scaling in self._active_path:
            emb_A, emb_B = self.lora_embedding_A[name], self.lora_embedding_B[name]
            # Dropout on token ids is meaningless; PEFT skips it for embeddings too.
            after_a = F.embedding(
                x, emb_A.T, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq, base.sparse
            )
            result.add_(after_a @ emb_B.T, alpha=scaling)
        return result


def make_lora_layer(target: nn.Module, fan_in_fan_out: bool = False) -> LoraLayer:
    """Wrap ``target`` in the LoRA layer class for its type, or raise naming the type."""
    if is_conv1d(target):
        return Conv1D(target)
    if isinstance(target, nn.Linear):
        return Linear(target, fan_in_fan_out=fan_in_fan_out)
    if isinstance(target, nn.Conv2d):
        return Conv2d(target)
    if isinstance(target, nn.Embedding):
        return Embedding(target)
    raise UnsupportedModuleError(
        f"LoRA supports nn.Linear, nn.Conv2d, nn.Embedding and transformers' Conv1D, not {type(target).__name__}."
    )


SUPPORTED_TYPES_HELP = "nn.Linear, nn.Conv2d, nn.Embedding, transformers Conv1D"
