"""Preview by weight patching (scale 0 == base, no reloads, equals diffusers) and mixing (equals PEFT)."""

import numpy as np
import pytest
import torch
from lorabooth.app.gallery import Gallery
from lorabooth.app.mix import MixError, mix
from lorabooth.app.preview import PreviewEngine, PreviewRequest
from lorabooth.app.storage import DataDir

REQ = PreviewRequest(prompt="a photo of sks dog", steps=2, guidance=3.0, seed=7)


@pytest.fixture(scope="module")
def engine():
    return PreviewEngine(device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, trained_adapter):
    g = Gallery(DataDir(tmp_path_factory.mktemp("pv") / "data"))
    return g.path(g.add_from_job({"id": "j", "name": "dog"}, trained_adapter)["name"])


def _arr(img):
    return np.asarray(img, dtype=np.int16)


def test_scale_zero_is_base_and_switching_does_not_reload(engine, folder, tiny_model):
    base = _arr(engine.generate(str(tiny_model), REQ, []))
    zero = _arr(engine.generate(str(tiny_model), REQ, [(folder, 0.0)]))
    one = _arr(engine.generate(str(tiny_model), REQ, [(folder, 1.0)]))
    two = _arr(engine.generate(str(tiny_model), REQ, [(folder, 2.0)]))
    again = _arr(engine.generate(str(tiny_model), REQ, []))
    assert np.array_equal(base, zero), "scale 0 must reproduce the base image exactly"
    assert np.abs(base - one).max() > 0 and np.abs(one - two).max() > 0
    assert np.array_equal(base, again), "removing the adapter must restore the base weights exactly"
    assert engine.loads == 1
    grid = engine.grid(str(tiny_model), REQ, [("dog", folder, 1.0), ("dog0", folder, 0.0)])
    assert [label for _, label in grid] == ["base", "dog @ 1", "dog0 @ 0", "dog@1 + dog0@0"]
    assert np.array_equal(_arr(grid[0][0]), base) and np.array_equal(_arr(grid[1][0]), one)


def test_patched_unet_equals_diffusers_load_lora_weights(engine, folder, tiny_model, trained_adapter):
    """The anchor: diffusers (PEFT backend) loading the trainer's file gives the same UNet output."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model), safety_checker=None)
    pipe.load_lora_weights(str(trained_adapter / "pytorch_lora_weights.safetensors"))
    ours = engine.pipeline(str(tiny_model))
    engine._apply([(folder, 1.0)])
    torch.manual_seed(0)
    sample = torch.randn(1, 4, 16, 16)
    hidden = torch.randn(1, 77, 32)
    with torch.no_grad():
        want = pipe.unet(sample, 10, encoder_hidden_states=hidden).sample
        got = ours.unet(sample, 10, encoder_hidden_states=hidden).sample
        ids = pipe.tokenizer(["a photo of sks dog"], padding="max_length", max_length=77, return_tensors="pt").input_ids
        te_want = pipe.text_encoder(ids)[0]
        te_got = ours.text_encoder(ids)[0]
    engine._apply([])
    assert (want - pipe.unet.__class__.from_pretrained(str(tiny_model), subfolder="unet")(
        sample, 10, encoder_hidden_states=hidden).sample).abs().max() > 1e-4, "the LoRA must change the output"
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(te_got, te_want, rtol=1e-4, atol=1e-5)


def _second_adapter(folder, tmp_path):
    from lorabooth.adapters.formats import load_lora

    lora = load_lora(folder)
    gen = torch.Generator().manual_seed(1)
    for mod in lora.modules.values():
        mod.up = torch.randn(mod.up.shape, generator=gen) * 0.1
        mod.alpha = mod.alpha * 2
    return lora


def test_cat_mix_is_the_weighted_sum_of_deltas(folder, tmp_path):
    from lorabooth.adapters.formats import load_lora

    a, b = load_lora(folder), _second_adapter(folder, tmp_path)
    mixed = mix([a, b], [0.7, -0.4], "cat")
    for key, mod in mixed.modules.items():
        want = 0.7 * a.modules[key].delta() - 0.4 * b.modules[key].delta()
        torch.testing.assert_close(mod.delta(), want, rtol=1e-5, atol=1e-7)
        assert mod.rank == a.modules[key].rank + b.modules[key].rank


def test_linear_and_cat_match_peft_add_weighted_adapter(folder, tmp_path, tiny_model):
    """The anchor: PEFT's own add_weighted_adapter on the same two UNet adapters."""
    from diffusers import UNet2DConditionModel
    from lorabooth.adapters.formats import load_lora, save_lora
    from peft import PeftModel

    a = load_lora(folder / "unet", part="unet")
    b_full = _second_adapter(folder, tmp_path)
    b = load_lora(folder / "unet", part="unet")
    b.modules = {k: v for k, v in b_full.modules.items() if k[0] == "unet"}
    save_lora(b, tmp_path / "b", "peft")
    unet = UNet2DConditionModel.from_pretrained(str(tiny_model), subfolder="unet")
    peft_model = PeftModel.from_pretrained(unet, str(folder / "unet"), adapter_name="a")
    peft_model.load_adapter(str(tmp_path / "b"), adapter_name="b")
    for comb in ("linear", "cat"):
        peft_model.add_weighted_adapter(["a", "b"], [0.6, -0.3], f"m_{comb}", combination_type=comb)
        ours = mix([a, b], [0.6, -0.3], comb)
        for (_, path), mod in ours.modules.items():
            layer = peft_model.base_model.model.get_submodule(path)
            torch.testing.assert_close(mod.down, layer.lora_A[f"m_{comb}"].weight.detach(), rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(mod.up, layer.lora_B[f"m_{comb}"].weight.detach(), rtol=1e-6, atol=1e-7)
            assert mod.scale() == pytest.approx(layer.scaling[f"m_{comb}"])


def test_mix_errors_are_clear(folder):
    from lorabooth.adapters.formats import load_lora

    a = load_lora(folder)
    with pytest.raises(MixError, match="at least two"):
        mix([a], [1.0], "linear")
    with pytest.raises(MixError, match="unknown combination"):
        mix([a, a], [1.0, 1.0], "ties-ish")
    small = load_lora(folder)
    for mod in small.modules.values():
        mod.down, mod.up = mod.down[:1], mod.up[:, :1]
    with pytest.raises(MixError, match="equal rank"):
        mix([a, small], [1.0, 1.0], "linear")
