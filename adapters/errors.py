"""One family of exceptions for the adapter core.

Every error is a ``ValueError`` (as PEFT raises) so existing ``except ValueError`` code keeps working,
while callers that care can catch the narrower classes. Messages name the layer, key or file at fault
and say what would fix it.
"""

from __future__ import annotations


class AdapterError(ValueError):
    """Base class of every error raised by ``lorabooth.adapters``."""


class ConfigError(AdapterError):
    """An adapter config is invalid, unknown or cannot be read."""


class TargetNotFoundError(AdapterError):
    """``target_modules`` (or ``modules_to_save``) matched nothing in the model."""


class UnsupportedModuleError(AdapterError):
    """A targeted module has a type LoRA cannot wrap."""


class ShapeMismatchError(AdapterError):
    """A state dict's tensors do not fit the model's layers."""


class AdapterFileError(AdapterError):
    """An adapter file is missing, unreadable, or not in a safe format."""


class AdapterNameError(AdapterError):
    """An adapter name is unknown, already used, or not a valid name."""


class MergeError(AdapterError):
    """Merging would corrupt the base weights (NaN/Inf) or is not possible for this layer."""
