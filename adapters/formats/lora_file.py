"""The canonical in-memory form every reader produces and every writer consumes.

One ``LoraModule`` per adapted layer: ``down`` (= PEFT ``lora_A``, kohya ``lora_down``), ``up`` (= ``lora_B`` /
``lora_up``) and ``alpha``. The effective weight change is ``scale * up @ down`` with ``scale = alpha / rank``
(``alpha / sqrt(rank)`` for rsLoRA). Modules are keyed by ``(part, module_path)`` where ``part`` names the model
the path lives in: ``unet``, ``text_encoder``, ``text_encoder_2``, or ``model`` for a single model (e.g. an LLM).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch

PARTS = ("unet", "text_encoder", "text_encoder_2", "model")


@dataclass
class LoraModule:
    down: torch.Tensor
    up: torch.Tensor
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def scale(self, use_rslora: bool = False) -> float:
        return self.alpha / (math.sqrt(self.rank) if use_rslora else self.rank)

    def delta(self, use_rslora: bool = False) -> torch.Tensor:
        """The dense weight change ``scale * up @ down`` in the base layer's weight shape."""
        return lora_delta(self.down, self.up, self.scale(use_rslora))


def lora_delta(down: torch.Tensor, up: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * up @ down`` for linear (2-d) and conv (4-d) factors, computed like PEFT does."""
    if down.dim() == 2:
        return (up @ down) * scale
    if down.dim() == 4:
        if down.shape[2:] == (1, 1):
            return (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3) * scale
        # a k x k down conv followed by a 1x1 up conv: compose them as convolutions
        return torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3) * scale
    raise ValueError(f"lora down weight must be 2-d or 4-d, got shape {tuple(down.shape)}")


@dataclass
class LoraFile:
    """A LoRA adapter in canonical form, plus what the reader learned about the file."""

    modules: dict[tuple[str, str], LoraModule] = field(default_factory=dict)
    use_rslora: bool = False
    format: str = "unknown"
    metadata: dict[str, str] = field(default_factory=dict)
    unused_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = ""

    def parts(self) -> list[str]:
        return sorted({part for part, _ in self.modules}, key=lambda p: PARTS.index(p) if p in PARTS else 99)

    def part_modules(self, part: str) -> dict[str, LoraModule]:
        return {path: mod for (p, path), mod in self.modules.items() if p == part}

    def common_rank_alpha(self, part: str | None = None) -> tuple[int, float]:
        """The most common (rank, alpha) — what a single ``r``/``lora_alpha`` config would say."""
        mods = [m for (p, _), m in self.modules.items() if part is None or p == part]
        if not mods:
            return 0, 0.0
        rank = Counter(m.rank for m in mods).most_common(1)[0][0]
        alpha = Counter(m.alpha for m in mods).most_common(1)[0][0]
        return rank, alpha

    def num_parameters(self) -> int:
        return sum(m.down.numel() + m.up.numel() for m in self.modules.values())

    def deltas(self) -> dict[tuple[str, str], torch.Tensor]:
        return {key: mod.delta(self.use_rslora) for key, mod in self.modules.items()}
