"""Bad input gets a clear error naming what is wrong — and leaves the model exactly as it was."""

from __future__ import annotations

import json
import os
import pickle

import lorabooth.adapters as lb
import pytest
import torch
from safetensors.torch import save_file

from tests.adapters.lora_cases import CASES, base_model, build_pair


def _gpt2():
    return base_model(CASES["gpt2"])


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_every_error_is_a_value_error():
    for cls in (lb.ConfigError, lb.TargetNotFoundError, lb.ShapeMismatchError, lb.AdapterFileError,
                lb.MergeError, lb.UnsupportedModuleError, lb.AdapterNameError):
        assert issubclass(cls, lb.AdapterError) and issubclass(cls, ValueError)


def test_target_modules_matching_nothing_lists_closest_names():
    model = _gpt2()
    before = _snapshot(model)
    with pytest.raises(lb.TargetNotFoundError) as err:
        lb.get_peft_model(model, lb.LoraConfig(target_modules=["c_atn", "q_prj"]))
    assert "c_atn" in str(err.value) and "c_attn" in str(err.value)
    assert not hasattr(model, "peft_config") and _same(before, model.state_dict())
    assert not any(isinstance(m, lb.LoraLayer) for m in model.modules())


def test_regex_matching_nothing_is_an_error_too():
    with pytest.raises(lb.TargetNotFoundError, match="Closest module names"):
        lb.get_peft_model(_gpt2(), lb.LoraConfig(target_modules=r".*\.attn\.c_att"))


@pytest.mark.parametrize("kwargs", [{"r": 0}, {"r": -4}, {"r": 2.5}, {"rank_pattern": {"c_attn": 0}}])
def test_non_positive_rank_is_refused(kwargs):
    with pytest.raises(lb.ConfigError, match="positive integer"):
        lb.LoraConfig(target_modules=["c_attn"], **kwargs)


@pytest.mark.parametrize("kwargs", [{"bias": "some"}, {"init_lora_weights": "pissa"}, {"lora_dropout": 1.5},
                                    {"task_type": "IMAGE_GEN"}])
def test_bad_config_values_are_refused(kwargs):
    with pytest.raises(lb.ConfigError):
        lb.LoraConfig(target_modules=["c_attn"], **kwargs)


def test_unsupported_module_type_is_named():
    model = _gpt2()
    with pytest.raises(lb.UnsupportedModuleError, match=r"ln_f \(LayerNorm\)"):
        lb.get_peft_model(model, lb.LoraConfig(target_modules=["c_attn", "ln_f"]))
    assert not any(isinstance(m, lb.LoraLayer) for m in model.modules())


def test_unknown_architecture_without_targets_asks_for_them():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(lb.ConfigError, match="target_modules"):
        lb.get_peft_model(model, lb.LoraConfig())


def test_duplicate_adapter_name_is_refused():
    model = lb.get_peft_model(_gpt2(), lb.LoraConfig(target_modules=["c_attn"]))
    with pytest.raises(lb.AdapterNameError, match="already"):
        model.add_adapter("default", lb.LoraConfig(target_modules=["c_attn"]))
    with pytest.raises(lb.AdapterNameError):
        model.set_adapter("nope")


def test_shape_mismatch_names_layer_and_shapes_and_loads_nothing(tmp_path):
    p = build_pair(CASES["gpt2"])
    p.ours.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    cfg["r"] = 2
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(lb.ShapeMismatchError) as err:
        lb.PeftModel.from_pretrained(base_model(p.case), tmp_path)
    msg = str(err.value)
    assert "transformer.h.0.attn.c_attn" in msg and "(4, 32)" in msg and "(2, 32)" in msg
    # into an existing model: a second adapter that does not fit changes nothing and is not left behind
    before = _snapshot(p.ours)
    with pytest.raises(lb.ShapeMismatchError):
        p.ours.load_adapter(tmp_path, adapter_name="bad")
    assert "bad" not in p.ours.peft_config and _same(before, p.ours.state_dict())


def test_one_bad_tensor_among_good_ones_loads_nothing():
    p = build_pair(CASES["gpt2"])
    before = _snapshot(p.ours)
    sd = {k: torch.zeros_like(v) for k, v in lb.get_peft_model_state_dict(p.ours).items()}
    last = sorted(sd)[-1]
    sd[last] = torch.zeros(3, 3)
    with pytest.raises(lb.ShapeMismatchError, match=r"\(3, 3\)"):
        lb.set_peft_model_state_dict(p.ours, sd)
    assert _same(before, p.ours.state_dict())
    sd.pop(last)
    sd["base_model.model.transformer.h.9.attn.c_attn.lora_A.weight"] = torch.zeros(4, 32)
    with pytest.raises(lb.AdapterError, match="match no layer"):
        lb.set_peft_model_state_dict(p.ours, sd)
    assert _same(before, p.ours.state_dict())


def test_unknown_peft_type_in_config_file(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING", "r": 4}))
    with pytest.raises(lb.ConfigError) as err:
        lb.PeftConfig.from_pretrained(tmp_path)
    assert "PROMPT_TUNING" in str(err.value) and "adapter_config.json" in str(err.value)


def test_peft_features_we_lack_are_refused_not_ignored(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "use_dora": True}))
    with pytest.raises(lb.ConfigError, match="use_dora"):
        lb.PeftConfig.from_pretrained(tmp_path)


class _Boom:
    def __reduce__(self):
        return (open, (os.environ["BOOM_PATH"], "w"))


def test_pickle_where_safetensors_expected_is_refused_unopened(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("BOOM_PATH", str(marker))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    lb.LoraConfig(target_modules=["c_attn"]).save_pretrained(adapter)
    torch.save({"x": torch.zeros(1)}, adapter / "adapter_model.safetensors")  # a zip/pickle in disguise
    with pytest.raises(lb.AdapterFileError, match="expected safetensors"):
        lb.load_adapter_files(adapter)
    with pytest.raises(lb.AdapterFileError):
        lb.PeftModel.from_pretrained(_gpt2(), adapter)
    # an old .bin holding code, not tensors: torch.load(weights_only=True) refuses, nothing runs
    os.unlink(adapter / "adapter_model.safetensors")
    with open(adapter / "adapter_model.bin", "wb") as fh:
        pickle.dump({"x": _Boom()}, fh)
    with pytest.raises(lb.AdapterFileError, match="weights_only"):
        lb.load_adapter_files(adapter)
    assert not marker.exists()


def test_missing_weights_and_missing_folder(tmp_path):
    with pytest.raises(lb.AdapterFileError, match="not a local adapter directory"):
        lb.PeftModel.from_pretrained(_gpt2(), tmp_path / "nowhere")
    lb.LoraConfig(target_modules=["c_attn"]).save_pretrained(tmp_path)
    with pytest.raises(lb.AdapterFileError, match="adapter_model.safetensors"):
        lb.PeftModel.from_pretrained(_gpt2(), tmp_path)
    save_file({"a": torch.zeros(1)}, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(lb.ConfigError, match="not a JSON"):
        lb.PeftModel.from_pretrained(_gpt2(), tmp_path)


def test_safe_merge_refuses_nan_and_leaves_weights_alone():
    p = build_pair(CASES["gpt2"])
    before = _snapshot(p.ours.get_base_model())
    layer = p.ours.get_base_model().transformer.h[1].attn.c_attn
    with torch.no_grad():
        layer.lora_B["default"].weight[0, 0] = float("nan")
    with pytest.raises(lb.MergeError, match="NaN/Inf"):
        p.ours.merge_and_unload(safe_merge=True)
    after = p.ours.get_base_model().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "lora_" not in k)
    assert not any(m.merged for m in p.ours.modules() if isinstance(m, lb.LoraLayer))
