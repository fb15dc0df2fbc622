"""lorabooth: train, mix and preview LoRA adapters.

Subpackages: ``lorabooth.adapters`` (the adapter core), ``lorabooth.trainer`` (DreamBooth),
``lorabooth.world`` (the embedded shapes world and its evaluator), ``lorabooth.app`` (Gradio UI).
"""

__version__ = "0.1.0"
