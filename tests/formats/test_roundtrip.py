"""Every format round-trips a LoRA exactly: same tensors, same alphas, hence bit-identical effective weights."""

from __future__ import annotations

import json

import pytest
import torch
from lorabooth.adapters.formats import FormatError, describe, detect_format, load_lora, save_lora
from safetensors.torch import load_file

from tests.formats.conftest import random_lora


def assert_same(a, b):
    assert set(a.modules) == set(b.modules)
    assert a.use_rslora == b.use_rslora
    for key, ma in a.modules.items():
        mb = b.modules[key]
        assert torch.equal(ma.down, mb.down) and torch.equal(ma.up, mb.up), key
        assert ma.alpha == mb.alpha, (key, ma.alpha, mb.alpha)
        assert torch.equal(ma.delta(a.use_rslora), mb.delta(b.use_rslora)), key


@pytest.fixture(scope="module")
def lora(unet, text_encoder):
    lora = random_lora({"unet": unet, "text_encoder": text_encoder}, rank=4, alpha=6.0)
    ranks = {m.rank for m in lora.modules.values()}
    alphas = {m.alpha for m in lora.modules.values()}
    assert len(ranks) > 1 and len(alphas) > 1 and any(m.alpha != m.rank for m in lora.modules.values())
    return lora


@pytest.mark.parametrize("chain", [["kohya"], ["diffusers"], ["peft"], ["peft", "kohya", "peft"],
                                   ["kohya", "diffusers", "kohya"], ["diffusers", "peft", "kohya", "diffusers"]])
def test_round_trip_exact(lora, tmp_path, chain):
    current = lora
    for i, fmt in enumerate(chain):
        out = tmp_path / (f"step{i}.safetensors" if fmt == "kohya" else f"step{i}")
        save_lora(current, out, to=fmt)
        assert detect_format(out) == fmt
        current = load_lora(out)
        assert current.unused_keys == []
    assert_same(lora, current)


def test_rslora_round_trips_through_kohya(unet, tmp_path):
    lora = random_lora({"unet": unet}, rank=4, alpha=3.0, rslora=True)
    save_lora(lora, tmp_path / "peft", to="peft")
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["use_rslora"] is True
    save_lora(load_lora(tmp_path / "peft"), tmp_path / "k.safetensors", to="kohya")
    # a plain kohya reader sees alpha * sqrt(r): the same effective scale alpha / sqrt(r)
    raw = load_file(tmp_path / "k.safetensors")
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    r = raw[f"{name}.lora_down.weight"].shape[0]
    mod = lora.modules[("unet", "down_blocks.0.attentions.0.proj_in")]
    assert abs(raw[f"{name}.alpha"].item() / r - mod.alpha / r ** 0.5) < 1e-6
    back = load_lora(tmp_path / "k.safetensors")
    assert_same(lora, back)


def test_peft_folder_layout_and_config(lora, tmp_path):
    save_lora(lora, tmp_path / "out", to="peft")
    for part in ("unet", "text_encoder"):
        text = (tmp_path / "out" / part / "adapter_config.json").read_text()
        config = json.loads(text)
        assert text == json.dumps(config, indent=2, sort_keys=True) + "\n"
        keys = load_file(tmp_path / "out" / part / "adapter_model.safetensors")
        assert all(k.startswith("base_model.model.") and k.endswith((".lora_A.weight", ".lora_B.weight"))
                   for k in keys)
        assert config["rank_pattern"] and config["alpha_pattern"]
    # a named sub-adapter in a sub-folder is readable by name
    save_lora(lora, tmp_path / "multi" / "style", to="peft")
    save_lora(lora, tmp_path / "multi", to="peft")
    assert set(load_lora(tmp_path / "multi", adapter_name="style").modules) == set(lora.modules)
    with pytest.raises(FormatError, match="no sub-adapter 'nope'"):
        load_lora(tmp_path / "multi", adapter_name="nope")


def test_kohya_keys_and_metadata(lora, tmp_path):
    out = tmp_path / "my_lora.safetensors"
    save_lora(lora, out, to="kohya", base_model="runwayml/stable-diffusion-v1-5", trigger_words=["sks dog"],
              training={"learning_rate": 1e-4, "max_train_steps": 400})
    raw = load_file(out)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_down.weight" in raw
    assert "lora_te_text_model_encoder_layers_1_self_attn_q_proj.alpha" in raw
    assert raw["lora_te_text_model_encoder_layers_1_self_attn_q_proj.alpha"].dim() == 0
    back = load_lora(out)
    meta = back.metadata
    rank, alpha = lora.common_rank_alpha()
    assert meta["ss_network_dim"] == str(rank) and float(meta["ss_network_alpha"]) == alpha
    assert meta["ss_sd_model_name"] == "runwayml/stable-diffusion-v1-5"
    assert meta["modelspec.trigger_phrase"] == "sks dog"
    assert json.loads(meta["ss_tag_frequency"]) == {"trigger": {"sks dog": 1}}
    assert meta["ss_learning_rate"] == "0.0001" and meta["ss_max_train_steps"] == "400"
    text = describe(back)
    assert "format:   kohya" in text and "unused:   none" in text and "ss_sd_model_name" in text


def test_sdxl_prefixes(unet, text_encoder, tmp_path):
    lora = random_lora({"unet": unet, "text_encoder": text_encoder, "text_encoder_2": text_encoder}, vary=False)
    save_lora(lora, tmp_path / "xl.safetensors", to="kohya")
    keys = load_file(tmp_path / "xl.safetensors").keys()
    assert any(k.startswith("lora_te1_text_model_") for k in keys)
    assert any(k.startswith("lora_te2_text_model_") for k in keys)
    assert not any(k.startswith("lora_te_") for k in keys)
    assert_same(lora, load_lora(tmp_path / "xl.safetensors"))


def test_unused_keys_are_reported(lora, tmp_path):
    out = tmp_path / "k.safetensors"
    save_lora(lora, out, to="kohya")
    raw = load_file(out)
    raw["lora_unet_mystery.hada_w1_a"] = torch.zeros(2, 2)
    raw["lora_unet_down_blocks_0_attentions_0_proj_in.dora_scale"] = torch.ones(1, 32)
    from safetensors.torch import save_file

    save_file(raw, out)
    back = load_lora(out)
    assert sorted(back.unused_keys) == ["lora_unet_down_blocks_0_attentions_0_proj_in.dora_scale",
                                        "lora_unet_mystery.hada_w1_a"]
    assert any("LyCORIS" in n for n in back.notes)
    assert "2 keys not converted" in describe(back)


def test_kohya_effective_weights_follow_kohyas_rule(lora, tmp_path):
    """What kohya/A1111/ComfyUI compute from our file (alpha / lora_down rows) equals our delta bit for bit."""
    from lorabooth.adapters.formats import flatten, lora_delta

    save_lora(lora, tmp_path / "k.safetensors", to="kohya")
    raw = load_file(tmp_path / "k.safetensors")
    for (part, path), mod in lora.modules.items():
        prefix = "lora_unet_" if part == "unet" else "lora_te_text_model_"
        name = prefix + flatten(path)
        down, up, alpha = raw[f"{name}.lora_down.weight"], raw[f"{name}.lora_up.weight"], raw[f"{name}.alpha"]
        assert torch.equal(lora_delta(down, up, alpha.item() / down.shape[0]), mod.delta()), name


def test_kohya_metadata_survives_a_trip_through_peft(lora, tmp_path):
    save_lora(lora, tmp_path / "a.safetensors", to="kohya", trigger_words=["sks"], training={"seed": 7})
    save_lora(load_lora(tmp_path / "a.safetensors"), tmp_path / "peft", to="peft")
    save_lora(load_lora(tmp_path / "peft"), tmp_path / "b.safetensors", to="kohya")
    meta = load_lora(tmp_path / "b.safetensors").metadata
    assert meta["modelspec.trigger_phrase"] == "sks" and meta["ss_seed"] == "7"
