"""Adapter configs with PEFT's field names, so ``adapter_config.json`` files travel both ways.

``PeftConfig.from_pretrained(dir)`` reads any config we know (dispatching on ``peft_type``); a
PEFT-written file carries many fields for methods we do not implement: they are accepted while they
hold their "off" value and refused with a clear error otherwise, so nothing is silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import ConfigError
from .serialization import CONFIG_NAME, atomic_write_text

TASK_TYPES = (
    "CAUSAL_LM",
    "SEQ_2_SEQ_LM",
    "SEQ_CLS",
    "TOKEN_CLS",
    "QUESTION_ANS",
    "FEATURE_EXTRACTION",
)

# Fields PEFT writes for features we do not implement, with the values that mean "not used".
_PEFT_FIELDS_OFF: dict[str, tuple[Any, ...]] = {
    "use_dora": (False, None),
    "lora_bias": (False, None),
    "layer_replication": (None, []),
    "target_parameters": (None, []),
    "trainable_token_indices": (None, [], {}),
    "use_qalora": (False, None),
    "use_bdlora": (False, None),
    "alora_invocation_tokens": (None,),
    "loftq_config": ({}, None),
    "eva_config": (None,),
    "corda_config": (None,),
    "arrow_config": (None,),
    "lora_ga_config": (None,),
    "kasa_config": (None,),
    "monteclora_config": (None,),
    "velora_config": (None,),
    "megatron_config": (None,),
}
# Informational PEFT fields that change nothing for plain LoRA.
_PEFT_FIELDS_IGNORED = {"peft_version", "megatron_core", "qalora_group_size", "ensure_weight_tying"}


@dataclass
class PeftConfig:
    """Fields shared by every adapter method (PEFT's names)."""

    peft_type: str | None = None
    task_type: str | None = None
    base_model_name_or_path: str | None = None
    revision: str | None = None
    inference_mode: bool = False
    auto_mapping: dict | None = None

    _registry: ClassVar[dict[str, type[PeftConfig]]] = {}

    def __post_init__(self) -> None:
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise ConfigError(f"task_type={self.task_type!r} is not one of {', '.join(TASK_TYPES)} (or None).")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with PEFT's field names (sets become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (set, frozenset)):
                value = sorted(value)
            out[f.name] = value
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``adapter_config.json`` (sorted keys, indent 2) atomically into ``save_directory``."""
        os.makedirs(save_directory, exist_ok=True)
        atomic_write_text(os.path.join(save_directory, CONFIG_NAME), self.to_json_string())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config dict") -> PeftConfig:
        """Build the right config class for ``data['peft_type']`` (or ``cls`` when it is concrete)."""
        data = dict(data)
        peft_type = data.get("peft_type")
        if peft_type is None and cls._default_peft_type() is not None:
            peft_type = cls._default_peft_type()
        target_cls = PeftConfig._registry.get(str(peft_type)) if peft_type is not None else None
        if target_cls is None:
            known = ", ".join(sorted(PeftConfig._registry))
            raise ConfigError(
                f"{source}: unknown peft_type {peft_type!r}; lorabooth reads {known}. "
                "Save the adapter as LoRA (peft_type 'LORA') or convert it first."
            )
        if cls is not PeftConfig and not issubclass(target_cls, cls):
            raise ConfigError(f"{source}: peft_type {peft_type!r} cannot be read as {cls.__name__}.")
        names = {f.name for f in dataclasses.fields(target_cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in names:
                kwargs[key] = value
            elif key in _PEFT_FIELDS_OFF:
                if value not in _PEFT_FIELDS_OFF[key]:
                    raise ConfigError(
                        f"{source}: {key}={value!r} asks for a PEFT feature lorabooth does not implement; "
                        f"only plain LoRA is supported (set {key} to {_PEFT_FIELDS_OFF[key][0]!r})."
                    )
            elif key not in _PEFT_FIELDS_IGNORED:
                warnings.warn(f"{source}: ignoring unknown config field {key!r}.", stacklevel=2)
        return target_cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> PeftConfig:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError as err:
            raise ConfigError(f"{path}: no adapter config here (expected {CONFIG_NAME}).") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not a JSON adapter config ({err}).") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: an adapter config must be a JSON object, got {type(data).__name__}.")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, subfolder: str | None = None) -> PeftConfig:
        """Read ``adapter_config.json`` from a local directory (optionally a sub-folder of it)."""
        path = os.path.join(directory, subfolder) if subfolder else os.fspath(directory)
        if os.path.isfile(path):
            return cls.from_json_file(path)
        return cls.from_json_file(os.path.join(path, CONFIG_NAME))

    @classmethod
    def _default_peft_type(cls) -> str | None:
        return None


@dataclass
class LoraConfig(PeftConfig):
    """LoRA hyper-parameters, field for field as PEFT's ``LoraConfig`` (plain LoRA subset).

    ``target_modules``: a list (an entry matches a full module name or a name ending in ``.<entry>``)
    or a regex string matched against full names; ``None`` picks the architecture default
    (``lorabooth.adapters.targets``). ``rank_pattern`` / ``alpha_pattern`` map a name or regex suffix
    to a per-layer ``r`` / ``lora_alpha``.
    """

    r: int = 8
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: str = "none"
    use_rslora: bool = False
    modules_to_save: list[str] | None = None
    init_lora_weights: bool | str = True
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.peft_type is None:
            self.peft_type = "LORA"
        if self.peft_type != "LORA":
            raise ConfigError(f"LoraConfig needs peft_type 'LORA', got {self.peft_type!r}.")
        self.target_modules = _as_name_list(self.target_modules, "target_modules")
        self.exclude_modules = _as_name_list(self.exclude_modules, "exclude_modules")
        if self.modules_to_save is not None:
            self.modules_to_save = list(dict.fromkeys(self.modules_to_save))
        _check_rank(self.r, "r")
        for key, rank in (self.rank_pattern or {}).items():
            _check_rank(rank, f"rank_pattern[{key!r}]")
        self.rank_pattern = dict(self.rank_pattern or {})
        self.alpha_pattern = dict(self.alpha_pattern or {})
        if self.bias not in ("none", "all", "lora_only"):
            raise ConfigError(f"bias={self.bias!r}: choose 'none', 'all' or 'lora_only'.")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ConfigError(f"lora_dropout={self.lora_dropout!r} must be in [0, 1).")
        init = self.init_lora_weights
        if not (init is True or init is False or (isinstance(init, str) and init.lower() == "gaussian")):
            raise ConfigError(
                f"init_lora_weights={init!r}: lorabooth supports True (Kaiming-uniform A, zero B), "
                "False (random A and B, for tests) and 'gaussian'."
            )
        if isinstance(self.target_modules, str) and self.layers_to_transform is not None:
            raise ConfigError("layers_to_transform cannot be used when target_modules is a regex string.")
        if isinstance(self.target_modules, str) and self.layers_pattern is not None:
            raise ConfigError("layers_pattern cannot be used when target_modules is a regex string.")
        if self.layers_pattern and self.layers_to_transform is None:
            raise ConfigError("layers_pattern only takes effect together with layers_to_transform; set both.")

    @classmethod
    def _default_peft_type(cls) -> str | None:
        return "LORA"


def _as_name_list(value: Any, name: str) -> list[str] | str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        items = list(value)
    except TypeError as err:
        raise ConfigError(f"{name} must be a list of module names or a regex string, got {value!r}.") from err
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{name} must contain only strings, got {items!r}.")
    return list(dict.fromkeys(items))


def _check_rank(r: Any, what: str) -> None:
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ConfigError(f"{what}={r!r}: the LoRA rank must be a positive integer (e.g. 4, 8 or 16).")


PeftConfig._registry["LORA"] = LoraConfig
