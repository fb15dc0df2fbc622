"""lorabooth: train, mix and preview LoRA adapters.

Subpackages: ``lorabooth.adapters`` (the adapter core), ``lorabooth.trainer`` (DreamBooth),
``lorabooth.world`` (the embedded shapes world and its evaluator), ``lorabooth.app`` (Gradio UI).
"""

__version__ = "0.1.0"


def _hide_torchvision_advice() -> None:
    """Drop transformers' "install torchvision" notice for CLIP's image processor.

    lorabooth never uses torchvision, and following that advice beside a CPU torch wheel installs a
    torchvision built for another torch, which then breaks every diffusers/transformers import.
    """
    import logging

    logging.getLogger("transformers.utils.import_utils").addFilter(
        lambda record: "requires torchvision (not installed)" not in record.getMessage()
    )


_hide_torchvision_advice()
