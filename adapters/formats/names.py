"""Module names across formats: kohya's flattened ``lora_unet_down_blocks_0_...`` <-> dotted module paths.

Flattening ``.`` to ``_`` loses information (``to_q`` vs ``to.q``). Unflattening therefore needs knowledge:
either the module names of the real model (exact, ``resolve_flat_name(..., candidates=...)``), or a vocabulary
of the multi-word names Stable Diffusion UNets, CLIP text encoders and common LLMs use (``unflatten``),
which the tests check against every module of SD-1.5- and SDXL-shaped models.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

# Names containing "_" that appear as a single path segment in SD/SDXL UNets (diffusers and the original
# "sgm"/LDM layout kohya uses for SDXL), CLIP text encoders and the common LLM families.
_MULTI_WORD = {
    # diffusers UNet2DConditionModel
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out",
    "proj_in", "proj_out", "conv_in", "conv_out", "conv_shortcut", "time_emb_proj", "time_embedding",
    "linear_1", "linear_2", "add_embedding", "conv_norm_out", "class_embedding", "add_time_proj",
    "encoder_hid_proj", "time_proj", "conv_act", "add_k_proj", "add_v_proj", "add_q_proj", "to_add_out",
    # original LDM / sgm UNet (kohya SDXL files)
    "input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb", "in_layers", "out_layers",
    "emb_layers", "skip_connection",
    # CLIP text encoders
    "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "layer_norm1", "layer_norm2",
    "final_layer_norm", "text_projection", "token_embedding", "position_embedding",
    # LLMs (llama/mistral/qwen, gpt2, opt, bloom, t5, bert, vit)
    "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens", "lm_head", "c_attn", "c_proj", "c_fc",
    "input_layernorm", "post_attention_layernorm", "query_key_value", "dense_h_to_4h", "dense_4h_to_h",
    "word_embeddings", "self_attention", "fc_in", "fc_out", "out_lin", "q_lin", "k_lin", "v_lin",
    "base_model", "decode_head", "linear_fuse", "linear_c",
}
_MAX_WORDS = max(len(w.split("_")) for w in _MULTI_WORD)


def flatten(path: str) -> str:
    """``down_blocks.0.attentions.0.proj_in`` -> ``down_blocks_0_attentions_0_proj_in`` (kohya's spelling)."""
    return path.replace(".", "_")


def unflatten(flat: str) -> str:
    """Best-effort inverse of ``flatten`` from the vocabulary of known multi-word segment names."""
    words = flat.split("_")
    segments: list[str] = []
    i = 0
    while i < len(words):
        for n in range(min(_MAX_WORDS, len(words) - i), 0, -1):
            candidate = "_".join(words[i:i + n])
            if n == 1 or candidate in _MULTI_WORD:
                segments.append(candidate)
                i += n
                break
    return ".".join(segments)


def resolve_flat_name(flat: str, candidates: dict[str, str] | None = None) -> str:
    """Dotted path for a flattened name: exact via ``candidates`` (see ``flat_index``), else the vocabulary."""
    if candidates is not None and flat in candidates:
        return candidates[flat]
    return unflatten(flat)


def flat_index(module_names: Iterable[str]) -> dict[str, str]:
    """Map flattened name -> dotted name for a model's modules; names that collide are left out (ambiguous)."""
    index: dict[str, str] = {}
    clashes: set[str] = set()
    for name in module_names:
        flat = flatten(name)
        if flat in index and index[flat] != name:
            clashes.add(flat)
        index[flat] = name
    for flat in clashes:
        del index[flat]
    return index


# --- the original LDM ("sgm") UNet layout -> diffusers names, for kohya SDXL files --------------------------

_SGM_RESNET = {"in_layers.2": "conv1", "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj",
               "skip_connection": "conv_shortcut"}


def _sgm_inner(rest: str) -> str:
    for old, new in _SGM_RESNET.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def sgm_to_diffusers(path: str, layers_per_block: int = 2) -> str:
    """Map an LDM/sgm UNet path (``input_blocks.4.1.proj_in``) to diffusers' (``down_blocks.1.attentions.0.proj_in``).

    Paths already in diffusers form come back unchanged. SD 1.x and SDXL both use two layers per block.
    """
    simple = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
              "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2",
              "input_blocks.0.0": "conv_in", "out.2": "conv_out"}
    for old, new in simple.items():
        if path == old or path.startswith(old + "."):
            return new + path[len(old):]
    m = re.match(r"(?:(input_blocks|output_blocks)\.(\d+)\.(\d+)|(middle_block)\.(\d+))(?:\.(.*))?$", path)
    if not m:
        return path
    kind = m.group(1) or m.group(4)
    i = int(m.group(2) or m.group(5))
    j = int(m.group(3) or 0)
    rest = m.group(6) or ""
    per = layers_per_block + 1
    if kind == "input_blocks":
        block, layer = (i - 1) // per, (i - 1) % per
        if layer == layers_per_block:  # the downsampler slot
            return f"down_blocks.{block}.downsamplers.0." + ("conv" + rest[2:] if rest.startswith("op") else rest)
        inner = "resnets" if j == 0 else "attentions"
        prefix = f"down_blocks.{block}.{inner}.{layer}"
    elif kind == "middle_block":
        prefix = {0: "mid_block.resnets.0", 1: "mid_block.attentions.0", 2: "mid_block.resnets.1"}[min(i, 2)]
    else:
        block, layer = i // per, i % per
        if j > 0 and rest.startswith("conv") and not rest.startswith("conv_"):  # the upsampler slot
            return f"up_blocks.{block}.upsamplers.0.{rest}"
        inner = "resnets" if j == 0 else "attentions"
        prefix = f"up_blocks.{block}.{inner}.{layer}"
    rest = _sgm_inner(rest) if "resnets" in prefix else rest
    return prefix + ("." + rest if rest else "")


# --- what base model a set of paths looks like ---------------------------------------------------------------

_CROSS_ATTN_DIM_TO_BASE = {768: "SD1", 1024: "SD2", 2048: "SDXL"}


def guess_base(paths: Iterable[tuple[str, str]], cross_attn_dim: int | None = None) -> str:
    """"SD1", "SD2", "SDXL", "SD (unknown version)", "LLM" or "unknown", from (part, path) pairs."""
    paths = list(paths)
    parts = {p for p, _ in paths}
    names = [n for _, n in paths]
    if "text_encoder_2" in parts or any(n.startswith(("add_embedding", "label_emb")) for n in names):
        return "SDXL"
    if "unet" in parts or any(re.search(r"(down|up)_blocks|mid_block|input_blocks|transformer_blocks", n)
                              for n in names):
        if cross_attn_dim in _CROSS_ATTN_DIM_TO_BASE:
            return _CROSS_ATTN_DIM_TO_BASE[cross_attn_dim]
        if any("attentions.0.transformer_blocks.9" in n or re.match(r"input_blocks\.[78]\.1", n) for n in names):
            return "SDXL"
        return "SD (unknown version)"
    if "text_encoder" in parts or any(n.startswith("text_model.") for n in names):
        return "SD (text encoder only)"
    if any(re.search(r"(layers|h|blocks|layer)\.\d+\..*(q_proj|c_attn|query_key_value|o_proj|gate_proj)", n)
           for n in names):
        return "LLM"
    return "unknown"


def guess_part(names: Iterable[str]) -> str:
    """Which pipeline component a list of module paths belongs to (for PEFT folders, which do not say)."""
    names = list(names)
    if any(re.match(r"(down_blocks|up_blocks|mid_block|conv_in|conv_out|time_embedding)", n) for n in names):
        return "unet"
    clip = re.compile(r"(text_model\.)?(encoder\.layers\.\d+\.(self_attn|mlp)\.|embeddings\.|final_layer_norm|"
                      r"text_projection)")
    if names and all(clip.match(n) for n in names):
        return "text_encoder"
    return "model"


# --- CLIP text encoders: transformers 5 dropped the ``text_model.`` wrapper of CLIPTextModel ----------------

_CLIP_ROOTS = ("encoder.", "embeddings.", "final_layer_norm")


@lru_cache(maxsize=1)
def clip_has_text_model_prefix() -> bool:
    """Whether the installed transformers names CLIP text modules ``text_model.encoder...`` (< 5) or ``encoder...``."""
    try:
        return int(version("transformers").split(".")[0]) < 5
    except (PackageNotFoundError, ValueError):
        return False


def with_text_model_prefix(path: str) -> str:
    """The spelling kohya/A1111/ComfyUI use for CLIP modules: always under ``text_model.``."""
    return "text_model." + path if path.startswith(_CLIP_ROOTS) else path


def text_path_for_installed(path: str) -> str:
    """A CLIP module path as the installed transformers spells it (accepts both spellings)."""
    if clip_has_text_model_prefix():
        return with_text_model_prefix(path)
    return path.removeprefix("text_model.") if path.startswith("text_model.") and path[11:].startswith(
        _CLIP_ROOTS) else path
