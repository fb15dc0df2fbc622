"""``modules_to_save``: fully trained copies of whole modules (e.g. a classifier head).

Mirrors PEFT's ``ModulesToSaveWrapper``: the wrapped module keeps the frozen ``original_module`` and
one trainable deep copy per adapter in ``modules_to_save[name]``; saved keys drop the
``modules_to_save.<name>`` part, so a head is stored as ``<path>.weight``.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from .adapter_holder import AdapterHolder, adapter_name_list
from .errors import AdapterNameError, UnsupportedModuleError


class ModulesToSaveWrapper(AdapterHolder):
    def __init__(self, module_to_save: nn.Module, adapter_name: str) -> None:
        super().__init__()
        if isinstance(module_to_save, (nn.ModuleDict, nn.ModuleList, nn.ParameterDict, nn.ParameterList)):
            raise UnsupportedModuleError(
                f"modules_to_save cannot wrap a {type(module_to_save).__name__}; name a module that has a forward()."
            )
        self.original_module = module_to_save
        self.modules_to_save = nn.ModuleDict()
        self._active_adapter = [adapter_name]
        self.update(adapter_name)

    def update(self, adapter_name: str) -> None:
        if adapter_name not in self.modules_to_save:
            self.modules_to_save[adapter_name] = copy.deepcopy(self.original_module)
        self.original_module.requires_grad_(False)
        self.modules_to_save[adapter_name].requires_grad_(adapter_name in self._active_adapter)

    def set_adapter(self, adapter_names: str | list[str], inference_mode: bool = False) -> None:
        """At most one copy can be active (there is no meaningful way to add two heads)."""
        names = [name for name in adapter_name_list(adapter_names) if name in self.modules_to_save]
        if len(names) > 1:
            raise AdapterNameError(f"only one adapter can be active on a modules_to_save module, got {names}.")
        for module in self.modules_to_save.values():
            module.requires_grad_(False)
        if names:
            self.modules_to_save[names[0]].requires_grad_(not inference_mode)
        self._active_adapter = names

    def enable_adapters(self, enabled: bool) -> None:
        self._disable_adapters = not enabled
        for name, module in self.modules_to_save.items():
            module.requires_grad_(enabled and name in self._active_adapter)

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name in self.modules_to_save:
            del self.modules_to_save[adapter_name]
        self._active_adapter = [name for name in self._active_adapter if name != adapter_name]

    def active_module(self) -> nn.Module:
        if self._disable_adapters or not self._active_adapter:
            return self.original_module
        return self.modules_to_save[self._active_adapter[0]]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.active_module()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if "_modules" not in self.__dict__ or name in ("original_module", "modules_to_save"):
                raise
        return getattr(self.active_module(), name)

