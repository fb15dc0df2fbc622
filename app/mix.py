"""Mix gallery adapters into a new one: a thin front for the core's ``mix_loras``.

The arithmetic (PEFT's ``add_weighted_adapter`` on ``LoraFile`` objects: linear, cat, svd, ties,
dare...) lives in ``lorabooth.adapters.mixing``; this module picks the defaults the app offers
and turns the core's errors into messages for the Mix tab.
"""

from __future__ import annotations

from lorabooth.adapters.mixing import COMBINATION_TYPES, NEEDS_DENSITY
from lorabooth.adapters.mixing import MixError as CoreMixError

# cat and linear first: the two a newcomer needs; the rest follow in the core's order
COMBINATIONS = ("cat", "linear", *(c for c in COMBINATION_TYPES if c not in ("cat", "linear")))
DEFAULT_DENSITY = 0.5


class MixError(ValueError):
    """Adapters that cannot be combined the requested way."""


def mix(loras: list, weights: list[float], combination: str = "linear", density: float | None = None):
    """A new ``LoraFile`` combining ``loras`` with ``weights`` (PEFT semantics; see the module doc)."""
    if combination not in COMBINATIONS:
        raise MixError(f"unknown combination {combination!r}; choose one of {', '.join(COMBINATIONS)}")
    if len(loras) < 2:
        raise MixError("pick at least two adapters to mix")
    if len(weights) != len(loras):
        raise MixError(f"{len(loras)} adapters but {len(weights)} weights")
    if combination in NEEDS_DENSITY and density is None:
        density = DEFAULT_DENSITY
    from lorabooth.adapters.mixing import mix_loras

    try:
        mixed, _report = mix_loras(loras, [float(w) for w in weights], combination, density=density)
    except CoreMixError as exc:
        raise MixError(str(exc)) from exc
    return mixed
