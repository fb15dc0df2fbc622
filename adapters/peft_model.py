"""``PeftModel``, the task wrappers and ``get_peft_model`` / ``inject_adapter_in_model``.

A ``PeftModel`` is a thin shell: ``self.base_model`` is a ``LoraModel`` holding the user's model, every
call is forwarded unchanged, and it adds PEFT's user-facing conveniences (parameter counts, saving in
PEFT's layout, loading, adapter switching). Works on any ``nn.Module`` — a diffusers UNet as well as
a transformers LM.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .config import LoraConfig, PeftConfig
from .errors import AdapterFileError, AdapterNameError, ConfigError
from .lora_model import LoraModel
from .serialization import find_weights_file, load_state_dict_file, save_adapter_files
from .state_dict import LoadResult, get_peft_model_state_dict, set_peft_model_state_dict


def _local_dir(model_id: str | os.PathLike, subfolder: str | None = None) -> str:
    path = os.path.join(model_id, subfolder) if subfolder else os.fspath(model_id)
    if not os.path.isdir(path):
        raise AdapterFileError(
            f"{path}: not a local adapter directory. lorabooth loads adapters from disk only; download "
            "the adapter folder (adapter_config.json + adapter_model.safetensors) and pass its path."
        )
    return path


class PeftModel(nn.Module):
    """A model with LoRA adapters, API-compatible with ``peft.PeftModel`` for LoRA."""

    # Modules a task adds to ``modules_to_save`` so its new head trains in full.
    _task_heads: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, peft_config: PeftConfig, adapter_name: str = "default") -> None:
        super().__init__()
        if not isinstance(peft_config, LoraConfig):
            raise ConfigError(f"lorabooth implements LoRA only; got {type(peft_config).__name__}.")
        self._add_task_heads(peft_config)
        self.base_model = LoraModel(model, peft_config, adapter_name)
        self.peft_type = peft_config.peft_type

    def _add_task_heads(self, config: LoraConfig) -> None:
        if self._task_heads:
            current = list(config.modules_to_save or [])
            config.modules_to_save = current + [h for h in self._task_heads if h not in current]

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.base_model.model(*args, **kwargs)

    # -- introspection -------------------------------------------------------------------------
    @property
    def peft_config(self) -> dict[str, LoraConfig]:
        return self.base_model.peft_config

    @property
    def active_adapter(self) -> str | list[str]:
        return self.base_model.active_adapter

    @property
    def active_adapters(self) -> list[str]:
        return self.base_model.active_adapters

    @property
    def active_peft_config(self) -> LoraConfig:
        return self.peft_config[self.active_adapters[0]]

    @property
    def modules_to_save(self) -> set[str] | None:
        names = {n for cfg in self.peft_config.values() for n in (cfg.modules_to_save or [])}
        return names or None

    def get_base_model(self) -> nn.Module:
        return self.base_model.model

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, tied parameters counted once (as PEFT)."""
        trainable = total = 0
        for _, param in self.named_parameters():
            total += param.numel()
            if param.requires_grad:
                trainable += param.numel()
        return trainable, total

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        pct = 100 * trainable / total if total else 0.0
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {pct:.4f}")

    # -- adapters ------------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, peft_config: PeftConfig) -> None:
        if not isinstance(peft_config, LoraConfig):
            raise ConfigError(f"lorabooth implements LoRA only; got {type(peft_config).__name__}.")
        self._add_task_heads(peft_config)
        self.base_model.add_adapter(adapter_name, peft_config)

    def set_adapter(self, adapter_name: str | list[str]) -> None:
        if isinstance(adapter_name, str) and adapter_name not in self.peft_config:
            raise AdapterNameError(f"no adapter named {adapter_name!r}; this model has {list(self.peft_config)}.")
        self.base_model.set_adapter(adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        self.base_model.delete_adapter(adapter_name)

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model alone inside the ``with`` block."""
        with self.base_model.disable_adapter():
            yield

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        self.base_model.merge_adapter(adapter_names=adapter_names, safe_merge=safe_merge)

    def unmerge_adapter(self) -> None:
        self.base_model.unmerge_adapter()

    def merge_and_unload(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> nn.Module:
        return self.base_model.merge_and_unload(safe_merge=safe_merge, adapter_names=adapter_names)

    def unload(self) -> nn.Module:
        return self.base_model.unload()

    # -- saving / loading ----------------------------------------------------------------------
    def save_pretrained(
        self, save_directory: str | os.PathLike, selected_adapters: list[str] | None = None, **_: Any
    ) -> None:
        """PEFT's layout: ``default`` at the top of ``save_directory``, others in sub-folders by name."""
        names = list(self.peft_config) if selected_adapters is None else list(selected_adapters)
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise AdapterNameError(f"cannot save unknown adapter(s) {unknown}; this model has {list(self.peft_config)}.")
        if os.path.isfile(save_directory):
            raise AdapterFileError(f"{save_directory}: is a file; save_pretrained needs a directory.")
        for name in names:
            config = copy.copy(self.peft_config[name])
            config.inference_mode = True
            if config.base_model_name_or_path is None:
                config.base_model_name_or_path = getattr(self.get_base_model(), "name_or_path", None) or None
            out_dir = os.fspath(save_directory) if name == "default" else os.path.join(save_directory, name)
            save_adapter_files(out_dir, get_peft_model_state_dict(self, adapter_name=name), config)

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        model_id: str | os.PathLike,
        adapter_name: str = "default",
        is_trainable: bool = False,
        config: PeftConfig | None = None,
        subfolder: str | None = None,
        **_: Any,
    ) -> PeftModel:
        """Wrap ``model`` and load the adapter saved in the local folder ``model_id``."""
        path = _local_dir(model_id, subfolder)
        config = copy.deepcopy(config) if config is not None else PeftConfig.from_pretrained(path)
        config.inference_mode = not is_trainable
        target_cls = cls
        if cls is PeftModel and config.task_type in TASK_TO_MODEL:
            target_cls = TASK_TO_MODEL[config.task_type]
        weights = load_state_dict_file(find_weights_file(path))
        peft_model = target_cls(model, config, adapter_name)
        peft_model._load_weights(weights, adapter_name, is_trainable)
        return peft_model

    def load_adapter(
        self,
        model_id: str | os.PathLike,
        adapter_name: str,
        is_trainable: bool = False,
        config: PeftConfig | None = None,
        subfolder: str | None = None,
        **_: Any,
    ) -> LoadResult:
        """Add (inactive) adapter ``adapter_name`` from a saved folder; returns missing/unexpected keys."""
        path = _local_dir(model_id, subfolder)
        config = copy.deepcopy(config) if config is not None else PeftConfig.from_pretrained(path)
        config.inference_mode = not is_trainable
        weights = load_state_dict_file(find_weights_file(path))
        if adapter_name not in self.peft_config:
            self.add_adapter(adapter_name, config)
        try:
            return self._load_weights(weights, adapter_name, is_trainable)
        except Exception:
            if adapter_name in self.peft_config and adapter_name not in self.active_adapters:
                self.delete_adapter(adapter_name)  # nothing half-applied
            raise

    def _load_weights(self, weights: dict[str, torch.Tensor], adapter_name: str, is_trainable: bool) -> LoadResult:
        result = set_peft_model_state_dict(self, weights, adapter_name=adapter_name)
        if not is_trainable:
            self.eval()
        return result


class PeftModelForCausalLM(PeftModel):
    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.get_base_model().generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> Any:
        return self.get_base_model().prepare_inputs_for_generation(*args, **kwargs)


class PeftModelForSeq2SeqLM(PeftModelForCausalLM):
    pass


class PeftModelForSequenceClassification(PeftModel):
    _task_heads = ("classifier", "score")


class PeftModelForTokenClassification(PeftModel):
    _task_heads = ("classifier", "score")


class PeftModelForQuestionAnswering(PeftModel):
    _task_heads = ("qa_outputs",)


class PeftModelForFeatureExtraction(PeftModel):
    pass


TASK_TO_MODEL: dict[str, type[PeftModel]] = {
    "CAUSAL_LM": PeftModelForCausalLM,
    "SEQ_2_SEQ_LM": PeftModelForSeq2SeqLM,
    "SEQ_CLS": PeftModelForSequenceClassification,
    "TOKEN_CLS": PeftModelForTokenClassification,
    "QUESTION_ANS": PeftModelForQuestionAnswering,
    "FEATURE_EXTRACTION": PeftModelForFeatureExtraction,
}


def get_peft_model(model: nn.Module, peft_config: PeftConfig, adapter_name: str = "default", **_: Any) -> PeftModel:
    """Wrap ``model`` with a new LoRA adapter; the task wrapper follows ``peft_config.task_type``."""
    if isinstance(model, PeftModel):
        raise ConfigError("this model is already a PeftModel; use model.add_adapter(name, config) instead.")
    if peft_config.base_model_name_or_path is None:
        name = getattr(model, "name_or_path", None)
        peft_config.base_model_name_or_path = name or None
    cls = TASK_TO_MODEL.get(peft_config.task_type or "", PeftModel)
    return cls(model, peft_config, adapter_name)


def inject_adapter_in_model(
    peft_config: PeftConfig, model: nn.Module, adapter_name: str = "default", *, skip_init: bool = False
) -> nn.Module:
    """Put LoRA layers into ``model`` in place (no wrapper) — for diffusers UNets and text encoders.

    Afterwards ``model.peft_config[adapter_name]`` holds the config; use
    ``get_peft_model_state_dict`` / ``set_peft_model_state_dict`` to save and load its weights.
    ``skip_init=True`` leaves the new adapter weights uninitialised (no random numbers drawn): only
    when every one of them is overwritten right after, as when loading a file.
    """
    if not isinstance(peft_config, LoraConfig):
        raise ConfigError(f"lorabooth implements LoRA only; got {type(peft_config).__name__}.")
    LoraModel(model, peft_config, adapter_name, skip_init=skip_init)
    return model
