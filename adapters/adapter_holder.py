"""What LoRA layers and ``modules_to_save`` wrappers share: which named adapters are active, and
whether adapters are switched off. The public names are PEFT's (``BaseTunerLayer``)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


def adapter_name_list(adapter_names: str | Iterable[str]) -> list[str]:
    """PEFT accepts one adapter name or several wherever adapters are named; normalise to a list."""
    return [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)


class AdapterHolder(nn.Module):
    """A module holding named adapters, some of them active. Registers no parameters or sub-modules."""

    def __init__(self) -> None:
        super().__init__()
        self._active_adapter: list[str] = []
        self._disable_adapters = False

    @property
    def active_adapter(self) -> str | list[str]:
        return self._active_adapter[0] if len(self._active_adapter) == 1 else list(self._active_adapter)

    @property
    def active_adapters(self) -> list[str]:
        return list(self._active_adapter)

    @property
    def disable_adapters(self) -> bool:
        return self._disable_adapters
