"""Mix gallery adapters into a new one, with PEFT's ``add_weighted_adapter`` semantics.

``cat``: the ranks add up; B factors are stacked and A factors carry ``weight * scale``, so the
mix's weight change is exactly ``sum(weight_i * delta_i)``.
``linear``: ranks must match; A and B are each summed with ``sqrt(weight_i * scale_i)`` (sign
kept on A), as PEFT does — cheaper, but not the exact sum of the deltas.
The result has ``alpha == rank`` (scale 1), like PEFT's mixed adapters.
"""

from __future__ import annotations

import math

import torch

COMBINATIONS = ("linear", "cat")


class MixError(ValueError):
    """Adapters that cannot be combined the requested way."""


def _combine_cat(mods: list[tuple[object, float, bool]]):
    downs, ups = [], []
    for mod, weight, rslora in mods:
        downs.append(mod.down.float() * (weight * mod.scale(rslora)))  # PEFT scales the A side
        ups.append(mod.up.float())
    return torch.cat(downs, 0), torch.cat(ups, 1)


def _combine_linear(path: str, mods: list[tuple[object, float, bool]]):
    ranks = {mod.rank for mod, _, _ in mods}
    if len(ranks) > 1:
        raise MixError(f"{path}: 'linear' needs equal ranks, found {sorted(ranks)}; use 'cat' instead")
    down = up = None
    for mod, weight, rslora in mods:
        w = weight * mod.scale(rslora)
        root = math.sqrt(abs(w))
        d = mod.down.float() * (math.copysign(root, w))
        u = mod.up.float() * root
        down = d if down is None else down + d
        up = u if up is None else up + u
    return down, up


def mix(loras: list, weights: list[float], combination: str = "linear"):
    """A new ``LoraFile`` combining ``loras`` (canonical ``LoraFile`` objects) with ``weights``."""
    from lorabooth.adapters.formats.lora_file import LoraFile, LoraModule

    if combination not in COMBINATIONS:
        raise MixError(f"unknown combination {combination!r}; choose one of {COMBINATIONS}")
    if len(loras) < 2:
        raise MixError("pick at least two adapters to mix")
    if len(weights) != len(loras):
        raise MixError(f"{len(loras)} adapters but {len(weights)} weights")
    keys = sorted({k for lora in loras for k in lora.modules})
    out = LoraFile(format="peft", metadata={"lorabooth_mix": combination})
    for key in keys:
        present = [(lora.modules[key], float(w), lora.use_rslora) for lora, w in zip(loras, weights, strict=True) if key in lora.modules]
        if combination == "cat":
            down, up = _combine_cat(present)
        else:
            down, up = _combine_linear(".".join(key), present)
        dtype = present[0][0].down.dtype
        out.modules[key] = LoraModule(down=down.to(dtype).contiguous(), up=up.to(dtype).contiguous(), alpha=float(down.shape[0]))
    return out
