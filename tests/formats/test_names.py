"""kohya name mapping covers every LoRA-able module of SD-1.5 and SDXL shaped models (real configs, meta device)."""

from __future__ import annotations

import pytest
import torch
from lorabooth.adapters.formats import flatten, unflatten
from lorabooth.adapters.formats.names import guess_base, sgm_to_diffusers, with_text_model_prefix

# The published UNet configs of SD 1.5 and SDXL base (only the fields that shape the module tree).
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
                 transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))


def _lora_able(model) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


@pytest.fixture(scope="module")
def sd15_names():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return _lora_able(UNet2DConditionModel(**SD15_UNET))


@pytest.fixture(scope="module")
def sdxl_names():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return _lora_able(UNet2DConditionModel(**SDXL_UNET))


def _clip_names(hidden: int, layers: int, projection: bool) -> list[str]:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    config = CLIPTextConfig(hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                            num_attention_heads=hidden // 64, projection_dim=hidden)
    with torch.device("meta"):
        return _lora_able(cls(config))


def test_sd15_every_unet_module_round_trips(sd15_names):
    assert len(sd15_names) > 250 and "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" in sd15_names
    wrong = [n for n in sd15_names if unflatten(flatten(n)) != n]
    assert wrong == []
    # attention and conv targets people train, all present
    for suffix in ("attn1.to_q", "attn2.to_k", "attn2.to_v", "to_out.0", "ff.net.0.proj", "ff.net.2",
                   "proj_in", "proj_out", "conv1", "conv2", "conv_shortcut", "time_emb_proj", "conv_in",
                   "conv_out", "downsamplers.0.conv", "upsamplers.0.conv", "time_embedding.linear_1"):
        assert any(n.endswith(suffix) for n in sd15_names), suffix


def test_sdxl_unet_and_both_text_encoders(sdxl_names):
    for i in range(2):
        assert f"down_blocks.1.attentions.0.transformer_blocks.{i}.attn2.to_k" in sdxl_names
    assert "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2" in sdxl_names
    assert [n for n in sdxl_names if unflatten(flatten(n)) != n] == []
    assert "add_embedding.linear_1" in sdxl_names
    for hidden, layers, proj in ((768, 12, False), (1280, 32, True)):
        names = _clip_names(hidden, layers, proj)
        assert len(names) >= layers * 6
        # kohya spells them lora_te1_text_model_encoder_layers_<i>_self_attn_q_proj (both CLIP spellings)
        for n in names:
            full = with_text_model_prefix(n)
            assert unflatten(flatten(full)) == full, n


def test_sdxl_sgm_names_map_to_diffusers(sdxl_names):
    """kohya trains SDXL on the original (sgm) UNet: input_blocks.4.1 is down_blocks.1.attentions.0 and so on."""
    cases = {
        "input_blocks.4.1.transformer_blocks.1.attn1.to_q": "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q",
        "input_blocks.5.1.proj_in": "down_blocks.1.attentions.1.proj_in",
        "input_blocks.7.1.transformer_blocks.9.ff.net.2": "down_blocks.2.attentions.0.transformer_blocks.9.ff.net.2",
        "input_blocks.1.0.in_layers.2": "down_blocks.0.resnets.0.conv1",
        "input_blocks.3.0.op": "down_blocks.0.downsamplers.0.conv",
        "middle_block.1.transformer_blocks.3.attn2.to_v": "mid_block.attentions.0.transformer_blocks.3.attn2.to_v",
        "middle_block.2.emb_layers.1": "mid_block.resnets.1.time_emb_proj",
        "output_blocks.0.1.transformer_blocks.0.attn1.to_out.0": "up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
        "output_blocks.2.2.conv": "up_blocks.0.upsamplers.0.conv",
        "output_blocks.3.0.skip_connection": "up_blocks.1.resnets.0.conv_shortcut",
        "output_blocks.8.0.out_layers.3": "up_blocks.2.resnets.2.conv2",
        "label_emb.0.0": "add_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
        "input_blocks.0.0": "conv_in", "out.2": "conv_out",
    }
    for sgm, diffusers_name in cases.items():
        assert unflatten(flatten(sgm)) == sgm
        assert sgm_to_diffusers(sgm) == diffusers_name, sgm
        assert diffusers_name in sdxl_names, diffusers_name


def test_exact_resolution_with_model_names():
    from lorabooth.adapters.formats.names import flat_index, resolve_flat_name

    names = ["blocks.0.my_weird.layer", "blocks.0.my.weird_layer", "head.out_fc"]
    index = flat_index(names)
    assert resolve_flat_name("head_out_fc", index) == "head.out_fc"
    assert "blocks_0_my_weird_layer" not in index  # two modules flatten alike: ambiguous, left to the caller


def test_guess_base():
    assert guess_base([("unet", "down_blocks.0.attentions.0.proj_in")], cross_attn_dim=768) == "SD1"
    assert guess_base([("unet", "x"), ("text_encoder_2", "y")]) == "SDXL"
    assert guess_base([("model", "model.layers.0.self_attn.q_proj")]) == "LLM"


def test_guess_part():
    from lorabooth.adapters.formats.names import guess_part

    assert guess_part(["down_blocks.0.attentions.0.proj_in"]) == "unet"
    assert guess_part(["encoder.layers.0.self_attn.q_proj", "encoder.layers.1.mlp.fc1"]) == "text_encoder"
    assert guess_part(["text_model.encoder.layers.0.self_attn.q_proj"]) == "text_encoder"
    assert guess_part(["encoder.layer.0.attention.self.query"]) == "model"  # BERT is not a CLIP text encoder
