"""Combining LoRA adapters: PEFT's ``add_weighted_adapter`` types, runtime mixing, fuse/unfuse, resize, extract.

Two entry levels share one set of formulas:

- on a model with LoRA layers (``PeftModel``, ``LoraModel`` or an injected module): ``add_weighted_adapter``,
  ``set_adapters`` (several active adapters with per-adapter scales, no merging), ``fuse`` / ``unfuse``;
- on files in canonical form (``lorabooth.adapters.formats.LoraFile``): ``mix_loras``, ``resize_lora``,
  ``extract_lora``.

Combination types follow PEFT 0.21 exactly (same order of random draws for the DARE types, so a fixed seed
gives the same result). Lossy types return their approximation error so a UI can show it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .errors import AdapterError, AdapterNameError, MergeError
from .layers import LoraLayer

COMBINATION_TYPES = ("svd", "linear", "cat", "ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd",
                     "dare_linear_svd", "magnitude_prune", "magnitude_prune_svd")
EQUAL_RANK_TYPES = ("linear", "ties", "dare_ties", "dare_linear", "magnitude_prune")
SVD_TYPES = tuple(t for t in COMBINATION_TYPES if t.endswith("svd"))
NEEDS_DENSITY = ("ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd", "dare_linear_svd",
                 "magnitude_prune", "magnitude_prune_svd")


class MixError(AdapterError):
    """Adapters cannot be combined as asked (unknown names, ranks or bases that do not fit the type)."""


@dataclass
class MixReport:
    """What a combination did; ``errors`` holds ``||target - result||_F / ||target||_F`` per layer (lossy types)."""

    adapter_name: str
    combination_type: str
    rank: int
    layers: int = 0
    errors: dict[str, float] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def mean_error(self) -> float:
        return sum(self.errors.values()) / len(self.errors) if self.errors else 0.0

    def summary(self) -> str:
        text = f"{self.adapter_name}: {self.combination_type}, rank {self.rank}, {self.layers} layers"
        if self.errors:
            text += f"; approximation error mean {self.mean_error:.2e}, max {self.max_error:.2e} (relative Frobenius)"
        return text


# --- task-vector merging (the formulas of TIES, DARE and magnitude pruning) ------------------------------------

def _weighted(stack: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return stack * weights.view(weights.shape + (1,) * (stack.dim() - 1))


def _keep_top_magnitude(t: torch.Tensor, density: float) -> torch.Tensor:
    keep = torch.zeros(t.numel(), dtype=t.dtype, device=t.device)
    keep[torch.topk(t.abs().reshape(-1), k=int(density * t.numel()), largest=True).indices] = 1
    return t * keep.view(t.shape)


def _keep_random(t: torch.Tensor, density: float, rescale: bool) -> torch.Tensor:
    kept = t * torch.bernoulli(torch.full_like(t, density))
    return kept / density if rescale else kept


def _sparsify(t: torch.Tensor, density: float, method: str) -> torch.Tensor:
    if density >= 1:
        warnings.warn(f"density {density} >= 1: nothing is pruned", stacklevel=3)
        return t
    if density < 0:
        raise MixError(f"density must be in [0, 1], got {density}")
    return _keep_top_magnitude(t, density) if method == "magnitude" else _keep_random(t, density, rescale=True)


def _elect_and_merge(stack: torch.Tensor, weights: torch.Tensor, method: str) -> torch.Tensor:
    # the majority sign is elected on the unweighted, pruned tensors (as TIES/PEFT do)
    signs = stack.sign()
    if method == "total":
        votes = stack.sum(dim=0)
    elif method == "frequency":
        votes = signs.sum(dim=0)
    else:
        raise MixError(f"majority_sign_method must be 'total' or 'frequency', got {method!r}")
    agree = signs == torch.where(votes >= 0, 1, -1)
    summed = (_weighted(stack, weights) * agree).sum(dim=0)
    return summed / torch.clamp(agree.sum(dim=0), min=1.0)


def merge_task_tensors(tensors: list[torch.Tensor], weights: torch.Tensor, method: str,
                       density: float | None = None, majority_sign_method: str = "total") -> torch.Tensor:
    """Combine same-shaped tensors: ``linear`` (weighted sum), ``ties``, ``dare_linear``, ``dare_ties``,
    ``magnitude_prune`` (``_svd`` suffixes are stripped; the SVD step is the caller's)."""
    method = method.removesuffix("_svd")
    if method in ("svd", "linear"):
        return _weighted(torch.stack(tensors), weights).sum(dim=0)
    if density is None:
        raise MixError(f"combination_type {method!r} needs density (the fraction of values kept, 0..1)")
    if method == "magnitude_prune":
        return _weighted(torch.stack([_sparsify(t, density, "magnitude") for t in tensors]), weights).sum(dim=0)
    if method == "ties":
        return _elect_and_merge(torch.stack([_sparsify(t, density, "magnitude") for t in tensors]), weights,
                                majority_sign_method)
    if method == "dare_linear":
        return _weighted(torch.stack([_sparsify(t, density, "random") for t in tensors]), weights).sum(dim=0)
    if method == "dare_ties":
        return _elect_and_merge(torch.stack([_sparsify(t, density, "random") for t in tensors]), weights,
                                majority_sign_method)
    raise MixError(f"unknown combination_type {method!r}; choose one of {COMBINATION_TYPES}")


# --- one layer: (A, B, scaling) per input adapter -> (A, B) of the combination ---------------------------------

def combine_factors(combination_type: str, factors: list[tuple[torch.Tensor, torch.Tensor, float]],
                    weights: Sequence[float], new_rank: int, *, deltas: list[torch.Tensor] | None = None,
                    density: float | None = None, majority_sign_method: str = "total",
                    svd_clamp: float | None = None, svd_full_matrices: bool = True, svd_driver: str | None = None,
                    transposed: bool = False) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """Return ``(A, B, error)`` for one layer; A/B have PEFT's shapes, and the result's scaling is 1.

    ``factors`` are (lora_A, lora_B, scaling) of the adapters present on the layer, ``weights`` theirs.
    ``deltas`` (scaled ``B @ A``, or its transpose with ``transposed=True`` as Conv1D/embedding layers report
    it) may be passed for the SVD types; they are computed from the factors otherwise. ``error`` is the relative Frobenius error of the SVD step, else ``None``.
    """
    a0, b0 = factors[0][0], factors[0][1]
    if combination_type == "cat":
        a = torch.cat([a * w * s for (a, _, s), w in zip(factors, weights)], dim=0)
        b = torch.cat([b for _, b, _ in factors], dim=1)
        out_a = torch.zeros((new_rank, *a0.shape[1:]), dtype=a0.dtype, device=a0.device)
        out_b = torch.zeros((b0.shape[0], new_rank, *b0.shape[2:]), dtype=b0.dtype, device=b0.device)
        out_a[: a.shape[0]] = a
        out_b[:, : b.shape[1]] = b
        return out_a, out_b, None
    if combination_type in EQUAL_RANK_TYPES:
        # split each weight*scaling over A and B as sqrt, carrying its sign on A only
        ws = [w * s for (_, _, s), w in zip(factors, weights)]
        wa = torch.tensor([math.sqrt(abs(x)) * (1 if x >= 0 else -1) for x in ws]).to(a0.device)
        wb = torch.tensor([math.sqrt(abs(x)) for x in ws]).to(b0.device)
        new_a = merge_task_tensors([a for a, _, _ in factors], wa, combination_type, density, majority_sign_method)
        new_b = merge_task_tensors([b for _, b, _ in factors], wb, combination_type, density, majority_sign_method)
        return new_a.to(a0.dtype), new_b.to(a0.dtype), None
    if combination_type not in SVD_TYPES:
        raise MixError(f"unknown combination_type {combination_type!r}; choose one of {COMBINATION_TYPES}")
    if deltas is None:
        from .formats.lora_file import lora_delta

        deltas = [lora_delta(a, b, s) for a, b, s in factors]
    w = torch.tensor(list(weights)).to(deltas[0].device)
    # prune/merge in the orientation given (DARE's random mask depends on it), then back to B @ A
    target = merge_task_tensors(deltas, w, combination_type, density, majority_sign_method)
    target = target.T if transposed else target
    conv = a0.dim() == 4
    matrix = target
    if conv:
        matrix = target.squeeze() if target.shape[2:4] == (1, 1) else target.flatten(start_dim=1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=svd_full_matrices, driver=svd_driver)
    u = u[:, :new_rank] @ torch.diag(s[:new_rank])
    vh = vh[:new_rank, :]
    total = float((s.double() ** 2).sum())
    if svd_clamp is not None:
        hi = torch.quantile(torch.cat([u.flatten(), vh.flatten()]), svd_clamp)
        u, vh = u.clamp(-hi, hi), vh.clamp(-hi, hi)
        residual = float(torch.linalg.norm(matrix - u @ vh).double() ** 2)
    else:  # Eckart-Young: what truncation drops is exactly the discarded singular values
        residual = max(0.0, total - float((s[:new_rank].double() ** 2).sum()))
    error = math.sqrt(residual / total) if total > 0 else 0.0
    if conv:
        u = u.reshape(b0.shape[0], new_rank, *b0.shape[2:])
        vh = vh.reshape(new_rank, *a0.shape[1:])
    return vh, u, error


# --- on a model --------------------------------------------------------------------------------------------

def _is_lora_layer(module: nn.Module) -> bool:
    return hasattr(module, "lora_A") and hasattr(module, "lora_B") and hasattr(module, "scaling") and hasattr(
        module, "r") and isinstance(module.r, dict)


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every LoRA layer of ``model`` (duck-typed on PEFT's attribute layout), in ``named_modules`` order."""
    return [(n, m) for n, m in model.named_modules() if _is_lora_layer(m)]


def _factor_tensors(layer: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    if name in layer.lora_A:
        return layer.lora_A[name].weight, layer.lora_B[name].weight
    emb_a = getattr(layer, "lora_embedding_A", None)
    if emb_a is not None and name in emb_a:
        return emb_a[name], layer.lora_embedding_B[name]
    return None


def _configs(model: nn.Module) -> dict[str, Any]:
    return dict(getattr(model, "peft_config", None) or {})


def _adapter_ranks(model: nn.Module, adapters: list[str]) -> list[int]:
    configs = _configs(model)
    ranks = []
    for name in adapters:
        cfg = configs.get(name)
        if cfg is not None:
            ranks.append(max([cfg.r, *(cfg.rank_pattern or {}).values()]))
        else:
            ranks.append(max((layer.r[name] for _, layer in lora_layers(model) if name in layer.r), default=0))
    return ranks


def _check_request(adapters: list[str], weights: Sequence[float], combination_type: str,
                   ranks: list[int], svd_rank: int | None, density: float | None, bases: list[str] | None = None,
                   ) -> tuple[str, int]:
    if not adapters:
        raise MixError("no adapters to combine; pass at least one adapter name")
    if len(weights) != len(adapters):
        raise MixError(f"{len(adapters)} adapters but {len(weights)} weights; give one weight per adapter")
    if combination_type not in COMBINATION_TYPES:
        raise MixError(f"unknown combination_type {combination_type!r}; choose one of {COMBINATION_TYPES}")
    if not all(math.isfinite(float(w)) for w in weights):
        raise MixError(f"weights must be finite numbers, got {list(weights)}")
    if bases is not None and len(set(bases)) > 1:
        detail = ", ".join(f"{a}: {b}" for a, b in zip(adapters, bases))
        raise MixError(f"these adapters were made for different base models ({detail}); mix adapters of one base")
    combination_type = "linear" if len(adapters) == 1 else combination_type
    if combination_type in NEEDS_DENSITY and (density is None or not 0 <= density <= 1):
        raise MixError(f"combination_type {combination_type!r} needs density in [0, 1] (fraction of values kept), "
                       f"got {density}")
    if combination_type in EQUAL_RANK_TYPES:
        if len(set(ranks)) != 1:
            detail = ", ".join(f"{a}: r={r}" for a, r in zip(adapters, ranks))
            raise MixError(f"combination_type {combination_type!r} needs adapters of equal rank, got {detail}. "
                           "Use 'cat' (exact, rank = sum of ranks) or 'svd' (rank of your choice, approximate), "
                           "or resize the adapters to one rank first")
        return combination_type, ranks[0]
    if combination_type == "cat":
        return combination_type, sum(ranks)
    return combination_type, svd_rank or max(ranks)


@torch.no_grad()
def add_weighted_adapter(model: nn.Module, adapters: list[str], weights: Sequence[float], adapter_name: str,
                         combination_type: Literal["svd", "linear", "cat", "ties", "ties_svd", "dare_ties",
                                                   "dare_linear", "dare_ties_svd", "dare_linear_svd",
                                                   "magnitude_prune", "magnitude_prune_svd"] = "svd",
                         svd_rank: int | None = None, svd_clamp: float | None = None,
                         svd_full_matrices: bool = True, svd_driver: str | None = None,
                         density: float | None = None,
                         majority_sign_method: Literal["total", "frequency"] = "total") -> MixReport:
    """PEFT's ``add_weighted_adapter`` on ``model`` (a ``PeftModel``, ``LoraModel`` or injected module).

    Adds ``adapter_name`` (rank ``new_rank``, ``lora_alpha = new_rank``, so scaling 1) combining ``adapters``
    with ``weights``; returns a ``MixReport`` (approximation error per layer for the SVD types).
    """
    configs = _configs(model)
    layers = lora_layers(model)
    known = set(configs) | {n for _, layer in layers for n in layer.r}
    missing = [a for a in adapters if a not in known]
    if missing:
        raise AdapterNameError(f"no adapter(s) {missing} on this model; it has {sorted(known)}")
    if adapter_name in known:
        warnings.warn(f"adapter {adapter_name!r} already exists; nothing was added (PEFT behaves the same)",
                      stacklevel=2)
        return MixReport(adapter_name, combination_type, 0)
    combination_type, new_rank = _check_request(list(adapters), weights, combination_type,
                                                _adapter_ranks(model, list(adapters)), svd_rank, density)
    _add_empty_adapter(model, layers, adapters, adapter_name, new_rank, configs)
    report = MixReport(adapter_name, combination_type, new_rank)
    for name, layer in lora_layers(model):
        target = _factor_tensors(layer, adapter_name)
        if target is None:
            continue
        present = [(a, w) for a, w in zip(adapters, weights) if _factor_tensors(layer, a) is not None]
        if not present:
            raise MixError(f"{name}: received the new adapter but holds none of {adapters}")
        factors = [(*_factor_tensors(layer, a), layer.scaling[a]) for a, _ in present]
        factors = [(a.data, b.data, s) for a, b, s in factors]
        deltas = [layer.get_delta_weight(a) for a, _ in present] if combination_type in SVD_TYPES else None
        transposed = bool(getattr(layer, "fan_in_fan_out", False)) or adapter_name in (
            getattr(layer, "lora_embedding_A", None) or {})
        new_a, new_b, error = combine_factors(
            combination_type, factors, [w for _, w in present], new_rank, deltas=deltas, density=density,
            majority_sign_method=majority_sign_method, svd_clamp=svd_clamp, svd_full_matrices=svd_full_matrices,
            svd_driver=svd_driver, transposed=transposed)
        target[0].data, target[1].data = new_a, new_b
        report.layers += 1
        if error is not None:
            report.errors[name] = error
    return report


def _add_empty_adapter(model: nn.Module, layers: list[tuple[str, nn.Module]], adapters: Sequence[str],
                       adapter_name: str, new_rank: int, configs: dict[str, Any]) -> None:
    """Create ``adapter_name`` on every layer targeted by any input adapter, the way PEFT does (same RNG use)."""
    base_cfg = configs.get(adapters[0])
    adder = getattr(model, "add_adapter", None)
    if base_cfg is not None and callable(adder) and dataclasses.is_dataclass(base_cfg):
        targets = [configs[a].target_modules for a in adapters]
        if all(isinstance(t, str) for t in targets):
            union: Any = "|".join(f"({t})" for t in targets)
        elif any(isinstance(t, str) for t in targets):
            raise MixError("cannot combine adapters whose target_modules mix a regex string and a list")
        else:
            union = sorted(set().union(*(set(t or []) for t in targets)))
        config = dataclasses.replace(base_cfg, r=new_rank, lora_alpha=new_rank, target_modules=union,
                                     alpha_pattern={}, rank_pattern={})
        active = list(getattr(model, "active_adapters", []) or [])
        adder(adapter_name, config)
        if active and hasattr(model, "set_adapter"):
            model.set_adapter(active if len(active) > 1 else active[0])
    else:  # a bare module with LoRA layers: add the adapter layer by layer
        for _, layer in layers:
            if any(a in layer.r for a in adapters):
                layer.update_layer(adapter_name, new_rank, new_rank)
    for _, layer in lora_layers(model):
        for container in (layer.lora_A, layer.lora_B, getattr(layer, "lora_embedding_A", {}),
                          getattr(layer, "lora_embedding_B", {})):
            if adapter_name in container:
                container[adapter_name].requires_grad_(False)


# --- runtime mixing: several active adapters, per-adapter scale, nothing merged --------------------------------

class AdapterMixer:
    """Switch the active adapters and their weights in place, fast enough to do before every generation.

    ``mixer = AdapterMixer(pipe.unet); mixer.set_adapters(["style", "subject"], [0.8, 1.0])`` — like
    diffusers' ``set_adapters``: each weight multiplies that adapter's ``alpha / r`` scaling.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = [layer for _, layer in lora_layers(model)]
        if not self.layers:
            raise MixError(f"{type(model).__name__} has no LoRA layers; load or add an adapter first")
        self.names = sorted({n for layer in self.layers for n in layer.r})

    def set_adapters(self, names: str | Sequence[str], weights: float | Sequence[float] | None = None) -> None:
        names = [names] if isinstance(names, str) else list(names)
        if weights is None:
            weights = [1.0] * len(names)
        elif isinstance(weights, (int, float)):
            weights = [float(weights)] * len(names)
        if len(weights) != len(names):
            raise MixError(f"{len(names)} adapter names but {len(weights)} weights")
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise AdapterNameError(f"no adapter(s) {unknown}; loaded: {self.names}")
        for layer in self.layers:
            if getattr(layer, "merged_adapters", None):
                raise MergeError("adapters are fused into the base weights; unfuse() before changing the mix")
            active = [n for n in names if n in layer.r] or names[:1]
            if isinstance(layer, LoraLayer):
                # changing the mix between generations must not change what a later training run trains
                layer.set_adapter(active, keep_grad=True)
            elif list(layer.active_adapters) != active:  # a PEFT layer
                layer.set_adapter(active)
            for name, weight in zip(names, weights):
                if name in layer.r:
                    # a LoraLayer's scaling dict keeps its cached forward path in step
                    layer.scaling[name] = float(weight) * _base_scaling(layer, name)


def _set_scale(layer: nn.Module, name: str, weight: float) -> None:
    if hasattr(layer, "set_scale"):
        layer.set_scale(name, weight)
    else:
        r = layer.r[name]
        rs = getattr(layer, "use_rslora", {}).get(name, False)
        layer.scaling[name] = weight * layer.lora_alpha[name] / (math.sqrt(r) if rs else r)


def set_adapters(model: nn.Module, names: str | Sequence[str], weights: float | Sequence[float] | None = None,
                 ) -> AdapterMixer:
    """One-shot ``AdapterMixer(model).set_adapters(names, weights)``; keep the mixer to switch faster later."""
    mixer = AdapterMixer(model)
    mixer.set_adapters(names, weights)
    return mixer


def fuse(model: nn.Module, adapter_names: Iterable[str] | None = None, scale: float = 1.0,
         safe: bool = True) -> list[str]:
    """Fold adapters into the base weights with ``scale`` (diffusers' ``fuse_lora(lora_scale=...)``).

    With ``safe`` nothing is changed if any layer would get NaN/Inf. Returns the fused adapter names.
    """
    layers = [layer for _, layer in lora_layers(model)]
    names = list(adapter_names) if adapter_names is not None else sorted(
        {n for layer in layers for n in layer.active_adapters})
    done: list[nn.Module] = []
    try:
        for layer in layers:
            here = [n for n in names if n in layer.r]
            if not here:
                continue
            for n in here:
                layer._lorabooth_unfused_scaling = getattr(layer, "_lorabooth_unfused_scaling", {})
                layer._lorabooth_unfused_scaling.setdefault(n, layer.scaling[n])
                _set_scale(layer, n, layer.scaling[n] / _base_scaling(layer, n) * scale)
            done.append(layer)
            layer.merge(safe_merge=safe, adapter_names=here)
    except Exception:
        unfuse_layers(done)
        raise
    return names


def _base_scaling(layer: nn.Module, name: str) -> float:
    r = layer.r[name]
    rs = getattr(layer, "use_rslora", {}).get(name, False)
    return layer.lora_alpha[name] / (math.sqrt(r) if rs else r)


def unfuse_layers(layers: Iterable[nn.Module]) -> None:
    for layer in layers:
        layer.unmerge()
        for n, scaling in getattr(layer, "_lorabooth_unfused_scaling", {}).items():
            _set_scale(layer, n, scaling / _base_scaling(layer, n))
        layer._lorabooth_unfused_scaling = {}


def unfuse(model: nn.Module) -> None:
    """Undo ``fuse``: subtract exactly what was added and restore the adapters' previous scales."""
    unfuse_layers(layer for _, layer in lora_layers(model))


# --- on files (canonical LoraFile): mix, resize, extract -------------------------------------------------------

@torch.no_grad()
def mix_loras(loras: Sequence[Any], weights: Sequence[float], combination_type: str = "svd", *,
              name: str = "mix", svd_rank: int | None = None, svd_clamp: float | None = None,
              density: float | None = None, majority_sign_method: str = "total") -> tuple[Any, MixReport]:
    """``add_weighted_adapter`` on ``LoraFile``s (no model needed): returns the mixed ``LoraFile`` and a report.

    Refuses adapters made for different bases (SD1 vs SDXL vs LLM) before any arithmetic.
    """
    from .formats import LoraFile, LoraModule, cross_attn_dim, guess_base
    from .formats.lora_file import lora_delta

    loras = list(loras)
    bases = [guess_base(lora.modules, cross_attn_dim(lora)) for lora in loras]
    known = [b for b in bases if b not in ("unknown", "SD (unknown version)", "SD (text encoder only)")]
    ranks = [max((m.rank for m in lora.modules.values()), default=0) for lora in loras]
    labels = [lora.source or f"adapter {i}" for i, lora in enumerate(loras)]
    _check_request(labels, weights, combination_type, ranks, svd_rank,
                   density, bases=known if len(known) == len(loras) else None)
    combination_type = "linear" if len(loras) == 1 else combination_type
    if combination_type in EQUAL_RANK_TYPES:
        for key in {k for lora in loras for k in lora.modules}:
            rs = {lora.modules[key].rank for lora in loras if key in lora.modules}
            if len(rs) > 1:
                raise MixError(f"{key[0]}.{key[1]}: ranks {sorted(rs)} differ between the adapters; "
                               f"{combination_type!r} needs equal ranks. Use 'cat' or 'svd' instead")
    out = LoraFile(format="mix", metadata={"lorabooth_mix": combination_type})
    report = MixReport(name, combination_type, 0)
    keys: list[tuple[str, str]] = []
    for lora in loras:
        keys += [k for k in lora.modules if k not in keys]
    shapes: dict[tuple[str, str], tuple] = {}
    for lora, label in zip(loras, labels):
        for key, mod in lora.modules.items():
            shape = (tuple(mod.up.shape[:1]), tuple(mod.down.shape[1:]))
            if shapes.setdefault(key, shape) != shape:
                raise MixError(f"{label}: {key[0]}.{key[1]} has a different layer shape than in the other adapters; "
                               "they were trained on different base models")
    for key in keys:
        present = [(lora, w) for lora, w in zip(loras, weights) if key in lora.modules]
        factors = [(lora.modules[key].down.float(), lora.modules[key].up.float(),
                    lora.modules[key].scale(lora.use_rslora)) for lora, _ in present]
        if combination_type == "cat":
            rank = sum(f[0].shape[0] for f in factors)
        elif combination_type in EQUAL_RANK_TYPES:
            rank = factors[0][0].shape[0]
        else:
            rank = svd_rank or max(ranks)
        rank = min(rank, *_max_rank(factors[0][0], factors[0][1])) if combination_type in SVD_TYPES else rank
        deltas = [lora_delta(a, b, s) for a, b, s in factors] if combination_type in SVD_TYPES else None
        a, b, err = combine_factors(combination_type, factors, [w for _, w in present], rank, deltas=deltas,
                                    density=density, majority_sign_method=majority_sign_method, svd_clamp=svd_clamp)
        dtype = present[0][0].modules[key].down.dtype
        out.modules[key] = LoraModule(down=a.to(dtype), up=b.to(dtype), alpha=float(a.shape[0]))
        report.layers += 1
        if err is not None:
            report.errors[f"{key[0]}.{key[1]}"] = err
    report.rank = max((m.rank for m in out.modules.values()), default=0)
    return out, report


def _max_rank(down: torch.Tensor, up: torch.Tensor) -> tuple[int, int]:
    return int(up.shape[0]), int(math.prod(down.shape[1:]))


def _low_rank(delta: torch.Tensor, rank: int | None, fro: float | None, kernel: tuple[int, ...]
              ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-k factors (down, up) of ``delta`` by SVD, the singular values split evenly between them."""
    matrix = delta.float().flatten(start_dim=1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    if fro is not None:  # smallest rank keeping this fraction of the Frobenius norm (kohya's sv_fro)
        energy = torch.cumsum(s ** 2, 0) / torch.clamp((s ** 2).sum(), min=1e-30)
        k = int(torch.searchsorted(energy, torch.tensor(fro ** 2)).item()) + 1
    else:
        k = rank if rank is not None else s.numel()
    k = max(1, min(k, s.numel()))
    root = s[:k].sqrt()
    up = u[:, :k] * root
    down = root[:, None] * vh[:k]
    norm = torch.linalg.norm(matrix)
    err = float(torch.linalg.norm(matrix - up @ down) / norm) if norm > 0 else 0.0
    if delta.dim() == 4:
        up = up.reshape(up.shape[0], k, 1, 1)
        down = down.reshape(k, *delta.shape[1:])
    return down, up, err


@torch.no_grad()
def resize_lora(lora: Any, rank: int | None = None, *, fro: float | None = None) -> tuple[Any, MixReport]:
    """kohya's "resize": re-factor every module to ``rank`` (or to keep ``fro`` of the Frobenius norm) by SVD.

    The result has scale 1 (alpha = new rank per module); the report gives each module's relative error.
    """
    from .formats import LoraFile, LoraModule

    if (rank is None) == (fro is None):
        raise MixError("give exactly one of rank= (a fixed rank) or fro= (fraction of the norm to keep, 0..1)")
    if rank is not None and rank < 1:
        raise MixError(f"rank must be >= 1, got {rank}")
    out = LoraFile(format=lora.format, metadata=dict(lora.metadata), source=lora.source)
    report = MixReport("resized", "svd-resize", rank or 0)
    for (part, path), mod in lora.modules.items():
        down, up, err = _low_rank(mod.delta(lora.use_rslora), rank, fro, tuple(mod.down.shape[2:]))
        out.modules[(part, path)] = LoraModule(down=down.to(mod.down.dtype), up=up.to(mod.up.dtype),
                                               alpha=float(down.shape[0]))
        report.errors[f"{part}.{path}"] = err
        report.layers += 1
    report.rank = max((m.rank for m in out.modules.values()), default=0)
    out.metadata.update({"ss_network_dim": str(report.rank), "ss_network_alpha": str(report.rank)})
    return out, report


@torch.no_grad()
def extract_lora(base: nn.Module | dict[str, torch.Tensor], tuned: nn.Module | dict[str, torch.Tensor],
                 rank: int, *, part: str = "unet", min_change: float = 1e-7,
                 targets: Iterable[str] | None = None) -> tuple[Any, MixReport]:
    """A rank-``rank`` LoRA of ``tuned - base`` (e.g. a fully fine-tuned UNet minus its base), with errors.

    Only 2-d (linear) and 4-d (conv) ``*.weight`` tensors that changed by more than ``min_change`` (relative)
    become LoRA modules; ``targets`` (module-name suffixes) narrows them further.
    """
    from .formats import LoraFile, LoraModule

    def weights_of(x: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if isinstance(x, nn.Module):
            return {f"{n}.weight": m.weight for n, m in x.named_modules()
                    if isinstance(m, (nn.Linear, nn.Conv2d)) or type(m).__name__ == "Conv1D"}
        return {k: v for k, v in x.items() if k.endswith(".weight") and v.dim() in (2, 4)}

    a, b = weights_of(base), weights_of(tuned)
    suffixes = tuple(targets) if targets is not None else None
    out = LoraFile(format="extracted")
    report = MixReport("extracted", "svd-extract", rank)
    for key in sorted(a.keys() & b.keys()):
        path = key[: -len(".weight")]
        if suffixes is not None and not path.endswith(suffixes):
            continue
        if a[key].shape != b[key].shape:
            raise MixError(f"{key}: shape {tuple(a[key].shape)} in base but {tuple(b[key].shape)} in tuned; "
                           "the two models do not share an architecture")
        delta = b[key].detach().float() - a[key].detach().float()
        scale = torch.linalg.norm(a[key].detach().float())
        if torch.linalg.norm(delta) <= min_change * max(float(scale), 1e-12):
            continue
        down, up, err = _low_rank(delta, rank, None, tuple(delta.shape[2:]))
        out.modules[(part, path)] = LoraModule(down=down, up=up, alpha=float(down.shape[0]))
        report.errors[f"{part}.{path}"] = err
        report.layers += 1
    if not out.modules:
        raise MixError("the two models have identical linear/conv weights (or none in common); nothing to extract")
    return out, report
