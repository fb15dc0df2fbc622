"""lorabooth.adapters — a small, PEFT-compatible LoRA core.

Same API names, same state-dict keys and the same on-disk layout as PEFT (which is only a test
oracle here): ``LoraConfig``, ``get_peft_model``, ``PeftModel``, ``inject_adapter_in_model``,
``get_peft_model_state_dict`` / ``set_peft_model_state_dict``, ``save_adapter_files`` /
``load_adapter_files``. Works on any ``nn.Module`` by walking names and types.

For models injected in place (``inject_adapter_in_model``, e.g. a diffusers UNet) the model-wide
operations are plain functions: ``set_active_adapters``, ``enable_adapter_layers``,
``merge_adapters`` / ``unmerge_adapters``, ``delete_adapter``, ``unload_model``.
"""

from .config import TASK_TYPES, LoraConfig, PeftConfig
from .errors import (
    AdapterError,
    AdapterFileError,
    AdapterNameError,
    ConfigError,
    MergeError,
    ShapeMismatchError,
    TargetNotFoundError,
    UnsupportedModuleError,
)
from .layers import Conv1D, Conv2d, Embedding, Linear, LoraLayer
from .lora_model import (
    LoraModel,
    active_adapters_of,
    delete_adapter,
    enable_adapter_layers,
    lora_layers,
    merge_adapters,
    set_active_adapters,
    unload_model,
    unmerge_adapters,
)
from .modules_to_save import ModulesToSaveWrapper
from .peft_model import (
    TASK_TO_MODEL,
    PeftModel,
    PeftModelForCausalLM,
    PeftModelForFeatureExtraction,
    PeftModelForQuestionAnswering,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    PeftModelForTokenClassification,
    get_peft_model,
    inject_adapter_in_model,
)
from .serialization import (
    CONFIG_NAME,
    SAFETENSORS_WEIGHTS_NAME,
    load_adapter_files,
    load_state_dict_file,
    save_adapter_files,
)
from .state_dict import get_peft_model_state_dict, set_peft_model_state_dict
from .targets import DEFAULT_MODULES_TO_SAVE, DEFAULT_TARGET_MODULES, default_target_modules

__all__ = [
    "AdapterError", "AdapterFileError", "AdapterNameError", "ConfigError", "MergeError", "ShapeMismatchError",
    "TargetNotFoundError", "UnsupportedModuleError",
    "LoraConfig", "PeftConfig", "TASK_TYPES",
    "set_active_adapters", "active_adapters_of", "enable_adapter_layers", "merge_adapters", "unmerge_adapters",
    "delete_adapter", "unload_model", "lora_layers",
    "LoraLayer", "Linear", "Conv1D", "Conv2d", "Embedding", "ModulesToSaveWrapper", "LoraModel",
    "PeftModel", "PeftModelForCausalLM", "PeftModelForSeq2SeqLM", "PeftModelForSequenceClassification",
    "PeftModelForTokenClassification", "PeftModelForQuestionAnswering", "PeftModelForFeatureExtraction",
    "TASK_TO_MODEL", "get_peft_model", "inject_adapter_in_model",
    "get_peft_model_state_dict", "set_peft_model_state_dict",
    "save_adapter_files", "load_adapter_files", "load_state_dict_file", "CONFIG_NAME", "SAFETENSORS_WEIGHTS_NAME",
    "DEFAULT_TARGET_MODULES", "DEFAULT_MODULES_TO_SAVE", "default_target_modules",
]
