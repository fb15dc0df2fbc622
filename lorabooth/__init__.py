"""lorabooth: train, mix and preview LoRA adapters.

Subpackages: ``lorabooth.adapters`` (the adapter core), ``lorabooth.trainer`` (DreamBooth),
``lorabooth.world`` (the embedded shapes world and its evaluator), ``lorabooth.app`` (Gradio UI).
"""

__version__ = "0.1.0"


# (logger, words of the notice): advice that would break or stall an offline CPU install.
_HIDDEN_ADVICE = (
    # transformers, when diffusers touches CLIP's image processor: "install torchvision". lorabooth never
    # uses torchvision, and PyPI's build beside the CPU torch wheel breaks every diffusers import.
    ("transformers.utils.import_utils", "requires torchvision (not installed)"),
    # bitsandbytes on AVX512-bf16 CPUs: "pip install kernels", which fetches a 4-bit kernel from the
    # hub at import. lorabooth uses bitsandbytes only for 8-bit Adam on a GPU.
    ("bitsandbytes.backends.cpu.ops", "gemm_4bit_forward from kernels-community"),
)


def _hide_install_advice() -> None:
    """Drop exactly the notices in `_HIDDEN_ADVICE`; every other warning of those loggers still shows."""
    import logging

    for logger, words in _HIDDEN_ADVICE:
        logging.getLogger(logger).addFilter(lambda record, words=words: words not in record.getMessage())


_hide_install_advice()
