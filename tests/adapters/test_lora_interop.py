"""Adapters cross the lorabooth <-> peft border in both directions and give the same outputs."""

from __future__ import annotations

import json
import os

import lorabooth.adapters as lb
import peft
import pytest
import torch
from safetensors.torch import load_file

from tests.adapters.lora_cases import CASES, base_model, build_pair, randomize_adapters


@pytest.mark.parametrize("name", ["gpt2", "bert", "vit"])
def test_ours_saved_loads_in_peft(name, tmp_path):
    p = build_pair(CASES[name])
    p.ours.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert list(cfg) == sorted(cfg) and cfg["peft_type"] == "LORA" and cfg["inference_mode"] is True
    assert (tmp_path / "adapter_config.json").read_text().startswith('{\n  "')  # indent 2
    loaded = peft.PeftModel.from_pretrained(base_model(p.case), tmp_path).eval()
    torch.testing.assert_close(p.outputs(loaded), p.outputs(p.ours), atol=1e-5, rtol=0)
    assert loaded.get_nb_trainable_parameters()[1] == p.ours.get_nb_trainable_parameters()[1]


@pytest.mark.parametrize("name", ["gpt2", "bert", "vit"])
def test_peft_saved_loads_in_ours(name, tmp_path):
    p = build_pair(CASES[name])
    p.theirs.save_pretrained(tmp_path)
    loaded = lb.PeftModel.from_pretrained(base_model(p.case), tmp_path)
    assert type(loaded).__name__ == type(p.theirs).__name__
    torch.testing.assert_close(p.outputs(loaded), p.outputs(p.theirs), atol=1e-5, rtol=0)
    assert not any(param.requires_grad for param in loaded.parameters())  # is_trainable=False: inference
    trainable = lb.PeftModel.from_pretrained(base_model(p.case), tmp_path, is_trainable=True)
    assert trainable.get_nb_trainable_parameters() == p.theirs.get_nb_trainable_parameters()


def test_saved_files_have_the_same_keys_and_bytes_as_peft(tmp_path):
    p = build_pair(CASES["bert"], bias="lora_only")
    p.ours.save_pretrained(tmp_path / "ours")
    p.theirs.save_pretrained(tmp_path / "theirs")
    ours = load_file(tmp_path / "ours" / "adapter_model.safetensors")
    theirs = load_file(tmp_path / "theirs" / "adapter_model.safetensors")
    assert sorted(ours) == sorted(theirs)
    assert "base_model.model.classifier.weight" in ours  # modules_to_save head, adapter name stripped
    assert any(k.endswith(".base_layer.bias") for k in ours)  # bias="lora_only"
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_several_adapters_saved_in_subfolders_like_peft(tmp_path):
    p = build_pair(CASES["gpt2"])
    for model, lib in ((p.ours, lb), (p.theirs, peft)):
        model.add_adapter("second", lib.LoraConfig(r=2, target_modules=["c_fc"], task_type="CAUSAL_LM"))
        randomize_adapters(model, seed=3)  # only active ("default") adapter params are trainable
    # give "second" identical random weights in both
    g = torch.Generator().manual_seed(9)
    second = {k: torch.randn(v.shape, generator=g) for k, v in
              peft.get_peft_model_state_dict(p.theirs, adapter_name="second").items()}
    peft.set_peft_model_state_dict(p.theirs, second, adapter_name="second")
    lb.set_peft_model_state_dict(p.ours, second, adapter_name="second")
    lb.set_peft_model_state_dict(p.ours, peft.get_peft_model_state_dict(p.theirs))
    p.ours.save_pretrained(tmp_path / "ours")
    p.theirs.save_pretrained(tmp_path / "theirs")
    for sub in ("", "second"):
        assert sorted(os.listdir(tmp_path / "ours" / sub)) >= ["adapter_config.json", "adapter_model.safetensors"]
        assert sorted(load_file(tmp_path / "ours" / sub / "adapter_model.safetensors")) == sorted(
            load_file(tmp_path / "theirs" / sub / "adapter_model.safetensors"))
    # load both adapters from our files into peft, switch, compare
    theirs = peft.PeftModel.from_pretrained(base_model(p.case), tmp_path / "ours")
    theirs.load_adapter(tmp_path / "ours" / "second", adapter_name="second")
    ours = lb.PeftModel.from_pretrained(base_model(p.case), tmp_path / "theirs")
    ours.load_adapter(tmp_path / "theirs" / "second", adapter_name="second")
    for name in ("default", "second"):
        theirs.set_adapter(name)
        ours.set_adapter(name)
        torch.testing.assert_close(p.outputs(ours), p.outputs(theirs), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_unet_inject_save_load_both_ways(tmp_path):
    case = CASES["unet"]
    kwargs = dict(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    theirs = peft.inject_adapter_in_model(peft.LoraConfig(**kwargs), base_model(case))
    randomize_adapters(theirs)
    ours = lb.inject_adapter_in_model(lb.LoraConfig(**kwargs), base_model(case))
    assert isinstance(ours, type(theirs)) and ours.peft_config["default"].r == 4
    # peft -> ours: peft's injected-model state dict (no base_model.model. prefix) loads into ours
    theirs_sd = peft.get_peft_model_state_dict(theirs)
    assert all(k.startswith(("down_blocks", "up_blocks", "mid_block")) for k in theirs_sd)
    lb.set_peft_model_state_dict(ours, theirs_sd)
    inputs = case.inputs()
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).sample, theirs(**inputs).sample, atol=1e-5, rtol=0)
    # ours -> files -> peft
    ours_sd = lb.get_peft_model_state_dict(ours)
    assert sorted(ours_sd) == sorted(theirs_sd)
    lb.save_adapter_files(tmp_path, ours_sd, ours.peft_config["default"])
    sd, cfg = lb.load_adapter_files(tmp_path)
    fresh = peft.inject_adapter_in_model(peft.LoraConfig(**{k: getattr(cfg, k) for k in kwargs}), base_model(case))
    peft.set_peft_model_state_dict(fresh, sd)
    with torch.no_grad():
        torch.testing.assert_close(fresh(**inputs).sample, theirs(**inputs).sample, atol=1e-5, rtol=0)
    # and peft's own loader reads our config file
    assert peft.PeftConfig.from_pretrained(str(tmp_path)).target_modules == set(kwargs["target_modules"])
