"""Shared builders for the formats/mixing tests: tiny SD parts from configs and random LoRAs that fit them."""

from __future__ import annotations

import pytest
import torch
from lorabooth.adapters.formats import LoraFile, LoraModule


def tiny_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32).eval()


def tiny_text_encoder(seed: int = 1):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, vocab_size=100, max_position_embeddings=77,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()


def tiny_pipeline():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(vae=None, text_encoder=tiny_text_encoder(), tokenizer=None, unet=tiny_unet(),
                                   scheduler=None, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
                "conv1", "conv2", "time_emb_proj", "conv_shortcut")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def lora_layers(model: torch.nn.Module, suffixes: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and n.endswith(suffixes)}


def random_lora(parts: dict[str, torch.nn.Module], rank: int = 4, alpha: float = 6.0, seed: int = 0,
                vary: bool = True, rslora: bool = False, every: int = 1) -> LoraFile:
    """A LoRA with nonzero B for every (``every``-th) target of each part; ``vary`` gives some layers other
    ranks/alphas."""
    g = torch.Generator().manual_seed(seed)
    lora = LoraFile(format="test", use_rslora=rslora)
    for part, model in parts.items():
        targets = lora_layers(model, UNET_TARGETS if part == "unet" else TE_TARGETS)
        for i, (name, layer) in enumerate(sorted(targets.items())[::every]):
            r = rank + (2 if vary and i % 3 == 1 else 0)
            a = alpha * (1.5 if vary and i % 4 == 2 else 1.0)
            w = layer.weight
            if w.dim() == 4:
                down = torch.randn(r, w.shape[1], *w.shape[2:], generator=g) * 0.1
                up = torch.randn(w.shape[0], r, 1, 1, generator=g) * 0.1
            else:
                down = torch.randn(r, w.shape[1], generator=g) * 0.1
                up = torch.randn(w.shape[0], r, generator=g) * 0.1
            lora.modules[(part, name)] = LoraModule(down=down, up=up, alpha=a)
    return lora


def merged_copy(model: torch.nn.Module, lora: LoraFile, part: str) -> torch.nn.Module:
    """``model`` with W + delta for every module of ``part``: the reference a loader must reproduce."""
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, mod in lora.part_modules(part).items():
            layer = out.get_submodule(name)
            layer.weight += mod.delta(lora.use_rslora).to(layer.weight.dtype)
    return out


def unet_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 500]), torch.randn(2, 5, 32, generator=g))


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@pytest.fixture(scope="module")
def text_encoder():
    return tiny_text_encoder()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one intra-op thread avoids OpenMP spin-waiting on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
