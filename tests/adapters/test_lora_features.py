"""Behaviour beyond plain equality: matching rules, biases, several adapters, files, defaults."""

from __future__ import annotations

import json
import os

import lorabooth.adapters as lb
import peft
import pytest
import torch
from lorabooth.adapters.targets import default_target_modules

from tests.adapters.lora_cases import CASES, base_model, build_pair


def _lora_names(model, layer_cls):
    return sorted(n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, layer_cls))


@pytest.mark.parametrize("case,kwargs", [
    ("gpt2", {"target_modules": ["c_proj"]}),
    ("gpt2", {"target_modules": ["attn.c_proj", "h.1.mlp.c_fc"]}),
    ("gpt2", {"target_modules": r".*h\.[01]\.(attn\.c_attn|mlp\.c_proj)"}),
    ("gpt2", {"target_modules": ["c_attn", "c_proj"], "exclude_modules": ["mlp.c_proj"]}),
    ("gpt2", {"target_modules": ["c_attn", "c_proj"], "exclude_modules": r".*h\.0\..*"}),
    ("gpt2", {"target_modules": ["c_attn", "c_fc"], "layers_to_transform": 0}),
    ("gpt2", {"target_modules": ["c_attn"], "layers_to_transform": [1], "layers_pattern": "h"}),
    ("bert", {"target_modules": ["query", "dense"], "modules_to_save": ["pooler"]}),
    ("t5", {"target_modules": ["q", "wo"]}),
])
def test_target_matching_selects_the_same_layers_as_peft(case, kwargs):
    ours = lb.get_peft_model(base_model(CASES[case]), lb.LoraConfig(**kwargs))
    theirs = peft.get_peft_model(base_model(CASES[case]), peft.LoraConfig(**kwargs))
    names = _lora_names(ours, lb.LoraLayer)
    assert names and names == _lora_names(theirs, peft.tuners.lora.LoraLayer)


@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
def test_bias_modes_train_and_save_what_peft_does(bias):
    p = build_pair(CASES["bert"], bias=bias)
    trainable = sorted(n for n, q in p.theirs.named_parameters() if q.requires_grad)
    assert sorted(n for n, q in p.ours.named_parameters() if q.requires_grad) == trainable
    assert sorted(lb.get_peft_model_state_dict(p.ours)) == sorted(peft.get_peft_model_state_dict(p.theirs))
    torch.testing.assert_close(p.outputs(p.ours), p.outputs(p.theirs), atol=1e-5, rtol=0)


def test_embedding_lora_equals_peft_and_merges():
    # wpe, not wte: GPT-2 ties wte to lm_head, so merging into wte would change the head too (in peft as well)
    p = build_pair(CASES["gpt2"], target_modules=["wpe", "c_attn"])
    layer = p.ours.get_base_model().transformer.wpe
    assert isinstance(layer, lb.Embedding) and layer.lora_embedding_A["default"].shape == (4, 32)
    torch.testing.assert_close(p.outputs(p.ours), p.outputs(p.theirs), atol=1e-5, rtol=0)
    unmerged = p.outputs(p.ours)
    p.ours.merge_adapter()
    torch.testing.assert_close(p.outputs(p.ours), unmerged, atol=1e-4, rtol=1e-4)


def test_several_adapters_switch_and_freeze_like_peft():
    p = build_pair(CASES["gpt2"])
    for model, lib in ((p.ours, lb), (p.theirs, peft)):
        model.add_adapter("b", lib.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn", "c_fc"],
                                              init_lora_weights=False))
    torch.manual_seed(0)
    sd = {k: torch.randn_like(v) for k, v in peft.get_peft_model_state_dict(p.theirs, adapter_name="b").items()}
    peft.set_peft_model_state_dict(p.theirs, sd, adapter_name="b")
    lb.set_peft_model_state_dict(p.ours, sd, adapter_name="b")

    def grads(m):
        return sorted(n for n, q in m.named_parameters() if q.requires_grad)

    assert p.ours.active_adapter == "default" and grads(p.ours) == grads(p.theirs)
    out_default = p.outputs(p.ours)
    for name in ("b", "default", "b"):
        p.ours.set_adapter(name)
        p.theirs.set_adapter(name)
        assert grads(p.ours) == grads(p.theirs) and p.ours.active_adapters == [name]
        torch.testing.assert_close(p.outputs(p.ours), p.outputs(p.theirs), atol=1e-5, rtol=0)
    assert (p.outputs(p.ours) - out_default).abs().max() > 1e-3
    # both at once (LoraModel.set_adapter takes a list, as in peft)
    p.ours.base_model.set_adapter(["default", "b"])
    p.theirs.base_model.set_adapter(["default", "b"])
    torch.testing.assert_close(p.outputs(p.ours), p.outputs(p.theirs), atol=1e-5, rtol=0)
    p.ours.delete_adapter("b")
    p.theirs.delete_adapter("b")
    assert list(p.ours.peft_config) == ["default"] and p.ours.active_adapters == ["default"]
    assert sorted(p.ours.state_dict()) == sorted(p.theirs.state_dict())
    torch.testing.assert_close(p.outputs(p.ours), out_default, atol=1e-6, rtol=0)


def test_unload_gives_back_the_base_model():
    p = build_pair(CASES["bert"])
    plain = p.ours.unload()
    assert not any(isinstance(m, (lb.LoraLayer, lb.ModulesToSaveWrapper)) for m in plain.modules())
    with torch.no_grad():
        torch.testing.assert_close(plain(**p.inputs).logits, p.outputs(p.base), atol=0, rtol=0)


def test_print_trainable_parameters_is_peft_format(capsys):
    p = build_pair(CASES["bert"])
    p.theirs.print_trainable_parameters()
    theirs = capsys.readouterr().out
    p.ours.print_trainable_parameters()
    ours = capsys.readouterr().out
    assert ours == theirs and ours.startswith("trainable params: ") and " || trainable%: " in ours


def test_generate_passes_through():
    p = build_pair(CASES["gpt2"])
    ids = p.inputs["input_ids"][:1, :4]
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    ours = p.ours.generate(input_ids=ids, **kw)
    assert ours.shape == (1, 9) and torch.equal(ours, p.theirs.generate(input_ids=ids, **kw))


def test_dropout_is_skipped_at_zero_and_active_in_training():
    zero = build_pair(CASES["gpt2"]).ours.get_base_model().transformer.h[0].attn.c_attn
    assert isinstance(zero.lora_dropout["default"], torch.nn.Identity) and zero._active_path[0][2] is None
    p = build_pair(CASES["gpt2"], lora_dropout=0.5)
    torch.testing.assert_close(p.outputs(p.ours), p.outputs(p.theirs), atol=1e-5, rtol=0)  # eval: no dropout
    p.ours.train()
    assert (p.outputs(p.ours) - p.outputs(p.theirs)).abs().max() > 1e-4


def test_old_bin_adapter_loads_with_weights_only(tmp_path):
    p = build_pair(CASES["gpt2"])
    p.ours.save_pretrained(tmp_path)
    sd, _ = lb.load_adapter_files(tmp_path)
    os.unlink(tmp_path / "adapter_model.safetensors")
    torch.save(sd, tmp_path / "adapter_model.bin")
    loaded = lb.PeftModel.from_pretrained(base_model(p.case), tmp_path)
    torch.testing.assert_close(p.outputs(loaded), p.outputs(p.ours), atol=0, rtol=0)


def test_saving_is_atomic_and_configs_round_trip(tmp_path):
    p = build_pair(CASES["gpt2"], rank_pattern={"c_proj": 2}, alpha_pattern={"c_proj": 5}, use_rslora=True)
    p.ours.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["adapter_config.json", "adapter_model.safetensors"]  # no temp files
    cfg = lb.PeftConfig.from_pretrained(tmp_path)
    assert isinstance(cfg, lb.LoraConfig) and cfg.rank_pattern == {"c_proj": 2} and cfg.use_rslora
    assert cfg.to_dict() == json.loads((tmp_path / "adapter_config.json").read_text())
    # a peft-written config (with all of peft's extra fields) reads as the same LoraConfig
    p.theirs.save_pretrained(tmp_path / "peft")
    theirs = lb.PeftConfig.from_pretrained(tmp_path / "peft")
    for key in ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora", "task_type", "bias"):
        assert getattr(theirs, key) == getattr(cfg, key), key
    assert sorted(theirs.target_modules) == sorted(cfg.target_modules)


def test_default_targets_follow_installed_module_names():
    vit = base_model(CASES["vit"])
    names = {n.rsplit(".", 1)[-1] for n, _ in vit.named_modules()}
    model = lb.get_peft_model(vit, lb.LoraConfig())
    wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, lb.LoraLayer)}
    assert wrapped == ({"q_proj", "v_proj"} if "q_proj" in names else {"query", "value"})
    assert isinstance(model.get_base_model().classifier, lb.ModulesToSaveWrapper)
    seg = lb.get_peft_model(base_model(CASES["segformer"]), lb.LoraConfig())
    assert isinstance(seg.get_base_model().decode_head, lb.ModulesToSaveWrapper)
    unet = lb.inject_adapter_in_model(lb.LoraConfig(), base_model(CASES["unet"]))
    assert unet.peft_config["default"].target_modules == ["to_q", "to_k", "to_v", "to_out.0"]
    wrapped = {n for n, m in unet.named_modules() if isinstance(m, lb.LoraLayer)}
    assert wrapped and all(n.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")) for n in wrapped)
    assert default_target_modules(base_model(CASES["clip"])) == ["q_proj", "k_proj", "v_proj", "out_proj"]


def test_injected_model_helpers_switch_merge_delete_and_unload():
    """The model-wide operations work on a plainly injected model (the diffusers path), no PeftModel."""
    p = build_pair(CASES["gpt2"])
    model = base_model(p.case)
    lb.inject_adapter_in_model(lb.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"]), model)
    lb.inject_adapter_in_model(lb.LoraConfig(r=2, target_modules=["c_attn"]), model, adapter_name="other")
    assert sorted(model.peft_config) == ["default", "other"]
    lb.set_peft_model_state_dict(model, lb.get_peft_model_state_dict(p.ours))  # "base_model.model." keys too
    lb.set_active_adapters(model, "default")
    assert lb.active_adapters_of(model) == ["default"]
    with torch.no_grad():
        unmerged = model(**p.inputs).logits
        torch.testing.assert_close(unmerged, p.outputs(p.ours), atol=1e-5, rtol=0)
        lb.enable_adapter_layers(model, False)
        torch.testing.assert_close(model(**p.inputs).logits, p.outputs(p.base), atol=0, rtol=0)
        lb.enable_adapter_layers(model, True)
        lb.merge_adapters(model)
        torch.testing.assert_close(model(**p.inputs).logits, unmerged, atol=1e-4, rtol=1e-4)
        lb.unmerge_adapters(model)
        assert lb.delete_adapter(model, "default") == ["other"] and list(model.peft_config) == ["other"]
        plain = lb.unload_model(model, merge=False)
        assert not hasattr(plain, "peft_config") and not any(isinstance(m, lb.LoraLayer) for m in plain.modules())
        torch.testing.assert_close(plain(**p.inputs).logits, p.outputs(p.base), atol=1e-6, rtol=0)


def test_rescaling_an_adapter_in_place_takes_effect():
    p = build_pair(CASES["gpt2"])
    full = p.outputs(p.ours)
    for model in (p.ours, p.theirs):
        for m in model.modules():
            if isinstance(getattr(m, "scaling", None), dict) and "default" in m.scaling:
                m.scaling["default"] *= 0.5  # what diffusers-style weight helpers do
    half = p.outputs(p.ours)
    assert (half - full).abs().max() > 1e-3
    torch.testing.assert_close(half, p.outputs(p.theirs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["gpt2", "unet"])
def test_skip_init_draws_no_random_numbers_and_loads_the_same_adapter(case):
    """``skip_init`` (for weights overwritten right away) builds the same layers and keys, without init."""
    p = build_pair(CASES[case])
    model = base_model(p.case).eval()
    rng = torch.get_rng_state()
    lb.inject_adapter_in_model(lb.LoraConfig(r=4, lora_alpha=8, **p.case.lora), model, skip_init=True)
    assert torch.equal(torch.get_rng_state(), rng)
    saved = lb.get_peft_model_state_dict(p.ours)
    assert sorted(lb.get_peft_model_state_dict(model)) == sorted(k.removeprefix("base_model.model.") for k in saved)
    lb.set_peft_model_state_dict(model, saved)
    torch.testing.assert_close(p.outputs(model), p.outputs(p.ours), atol=0, rtol=0)
