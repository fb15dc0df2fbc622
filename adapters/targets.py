"""Default LoRA targets per architecture — data, not code paths.

Used when ``LoraConfig.target_modules`` is None. Keys are transformers' ``config.model_type``; models
without one (diffusers) are looked up by class name. Where PEFT has a default we use the same one;
where it has none we take what the PEFT/diffusers examples use:

=====================  =====================================  ======================
architecture           target_modules                         modules_to_save
=====================  =====================================  ======================
GPT-2 / GPT-BigCode    c_attn
Bloom, GPT-NeoX        query_key_value
OPT, GPT-Neo, GPT-J    q_proj, v_proj
LLaMA-style            q_proj, v_proj (llama, mistral, mixtral, qwen2, qwen3, gemma, gemma2, phi3, ...)
T5 / mT5               q, v
BART / mBART           q_proj, v_proj
BERT, RoBERTa,         query, value
LayoutLM, ELECTRA
DeBERTa                in_proj
DeBERTa-v2             query_proj, value_proj
ViT                    query, value | q_proj, v_proj          classifier
Swin                   query, value | q_proj, v_proj          classifier
SegFormer              query, value | q_proj, v_proj          decode_head
Whisper                q_proj, v_proj
CLIP text encoder      q_proj, k_proj, v_proj, out_proj
diffusers UNet         to_q, to_k, to_v, to_out.0
=====================  =====================================  ======================

transformers 5 renamed the ViT/Swin/SegFormer attention projections from ``query/key/value`` to
``q_proj/k_proj/v_proj/o_proj``; the defaults list both spellings, and list entries that match
nothing are harmless as long as one matches. The default ``modules_to_save`` (the task head, which a
LoRA on a new label set must train in full) applies only when both fields are left unset.
"""

from __future__ import annotations

from torch import nn

_LLAMA_STYLE = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "gemma", "gemma2", "gemma3_text",
                "phi3", "olmo", "olmo2", "stablelm", "starcoder2", "cohere", "granite", "smollm3")
_VISION_QV = ["query", "value", "q_proj", "v_proj"]

DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    "gpt2": ["c_attn"],
    "gpt_bigcode": ["c_attn"],
    "bloom": ["query_key_value"],
    "gpt_neox": ["query_key_value"],
    "opt": ["q_proj", "v_proj"],
    "gpt_neo": ["q_proj", "v_proj"],
    "gptj": ["q_proj", "v_proj"],
    **{name: ["q_proj", "v_proj"] for name in _LLAMA_STYLE},
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "bart": ["q_proj", "v_proj"],
    "mbart": ["q_proj", "v_proj"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "layoutlm": ["query", "value"],
    "deberta": ["in_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "vit": _VISION_QV,
    "swin": _VISION_QV,
    "segformer": _VISION_QV,
    "whisper": ["q_proj", "v_proj"],
    "clip_text_model": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "clip": ["q_proj", "k_proj", "v_proj", "out_proj"],
    # diffusers models have no model_type: keyed by class name.
    "UNet2DConditionModel": ["to_q", "to_k", "to_v", "to_out.0"],
    "UNet2DModel": ["to_q", "to_k", "to_v", "to_out.0"],
}

DEFAULT_MODULES_TO_SAVE: dict[str, list[str]] = {
    "vit": ["classifier"],
    "swin": ["classifier"],
    "segformer": ["decode_head"],
}


def architecture_key(model: nn.Module) -> str | None:
    """``config.model_type`` for transformers models, the class name otherwise."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if isinstance(model_type, str) and model_type:
        return model_type
    return type(model).__name__


def default_target_modules(model: nn.Module) -> list[str] | None:
    key = architecture_key(model)
    found = DEFAULT_TARGET_MODULES.get(key) if key else None
    if found is None:
        found = DEFAULT_TARGET_MODULES.get(type(model).__name__)
    return list(found) if found is not None else None


def default_modules_to_save(model: nn.Module) -> list[str] | None:
    key = architecture_key(model)
    found = DEFAULT_MODULES_TO_SAVE.get(key) if key else None
    if not found:
        return None
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    present = [head for head in found if head in names]
    return present or None
