"""diffusers' single-file LoRA format: ``pytorch_lora_weights.safetensors``.

Keys are ``unet.<module path>.lora_A.weight`` / ``text_encoder.<module path>.lora_B.weight``; each
component's LoRA settings (rank, exact alpha, targets) go into the ``lora_adapter_metadata`` entry
of the safetensors header, which ``StableDiffusionPipeline.load_lora_weights`` reads, so an
alpha that differs from the rank survives the trip. Kept small so ``adapters/formats`` can replace it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lorabooth.adapters.serialization import atomic_write
from safetensors.torch import save_file

DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
# transformers 5 dropped CLIPTextModel's `text_model.` level; files everyone else reads (diffusers
# with transformers 4, kohya converters) keep it, and diffusers strips it again where it is absent.
_TEXT_MODEL_CHILDREN = ("encoder.", "embeddings.", "final_layer_norm.")
METADATA_KEY = "lora_adapter_metadata"


def _component_metadata(config) -> dict:
    targets = config.target_modules
    targets = sorted(targets) if isinstance(targets, (list, set, tuple)) else targets
    return {
        "r": int(config.r),
        "lora_alpha": float(config.lora_alpha),
        "lora_dropout": float(getattr(config, "lora_dropout", 0.0)),
        "target_modules": targets,
        "use_rslora": bool(getattr(config, "use_rslora", False)),
        "bias": getattr(config, "bias", "none"),
    }


def write_diffusers_lora(
    path: str | Path,
    components: dict[str, tuple[dict[str, torch.Tensor], object]],
) -> Path:
    """Write ``{"unet": (state_dict, LoraConfig), "text_encoder": (...)}`` as one diffusers LoRA file.

    State-dict keys are module paths inside the component (what ``get_peft_model_state_dict`` returns).
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, object] = {}
    for prefix, (state, config) in components.items():
        for key, value in state.items():
            if prefix == "text_encoder" and key.startswith(_TEXT_MODEL_CHILDREN):
                key = "text_model." + key
            tensors[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous()
        for key, value in _component_metadata(config).items():
            metadata[f"{prefix}.{key}"] = value
    header = {"format": "pt", METADATA_KEY: json.dumps(metadata, indent=2, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))
    return path
