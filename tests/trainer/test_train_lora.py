"""A full LoRA DreamBooth run on the tiny model, and its files checked against PEFT and diffusers."""

from __future__ import annotations

import json

import pytest
import torch
from lorabooth.trainer.args import read_resolved_config
from lorabooth.trainer.train_dreambooth import enable_gradient_checkpointing, main
from safetensors import safe_open

from tests.trainer.conftest import base_flags


@pytest.fixture(scope="module")
def lora_run(tiny_model, instance_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    class_dir = tmp_path_factory.mktemp("class") / "images"
    argv = base_flags(
        tiny_model, instance_dir, out, use_lora=True, train_text_encoder=True, gradient_checkpointing=True,
        with_prior_preservation=True, class_prompt="a photo of dog", class_data_dir=class_dir, num_class_images=2,
        num_inference_steps=2, lora_r=4, lora_alpha=8, lora_text_encoder_r=2, lora_text_encoder_alpha=3,
        max_train_steps=3, validation_prompt="a photo of sks dog", validation_steps=3, num_validation_images=1,
        report_to="tensorboard",
    )
    assert main(argv) == 0
    return out, class_dir


def test_output_folder_layout(lora_run):
    out, class_dir = lora_run
    for rel in ("unet/adapter_config.json", "unet/adapter_model.safetensors", "text_encoder/adapter_config.json",
                "text_encoder/adapter_model.safetensors", "pytorch_lora_weights.safetensors",
                "lorabooth_train.toml", "README.md", "validation/step-000003-0.png"):
        assert (out / rel).is_file(), rel
    assert len(list(class_dir.glob("*.png"))) == 2  # generated for prior preservation
    assert list((out / "logs").rglob("events.out.tfevents*"))  # TensorBoard loss/lr/images
    card = (out / "README.md").read_text()
    assert "a photo of sks dog" in card and "validation/step-000003-0.png" in card
    resolved = read_resolved_config(out)
    assert resolved["lora_text_encoder_r"] == 2 and resolved["with_prior_preservation"] is True
    unet_cfg = json.loads((out / "unet" / "adapter_config.json").read_text())
    assert (unet_cfg["r"], unet_cfg["lora_alpha"]) == (4, 8)


def test_both_adapters_trained(lora_run):
    """B starts at zero, so non-zero B in the text encoder proves its grads flowed through checkpointing."""
    out, _ = lora_run
    with safe_open(str(out / "pytorch_lora_weights.safetensors"), "pt") as f:
        keys = list(f.keys())
        te_b = [f.get_tensor(k) for k in keys if k.startswith("text_encoder.") and ".lora_B." in k]
        unet_b = [f.get_tensor(k) for k in keys if k.startswith("unet.") and ".lora_B." in k]
    assert te_b and unet_b
    assert all(t.abs().sum() > 0 for t in te_b)
    assert all(t.abs().sum() > 0 for t in unet_b)


def test_text_encoder_lora_gets_gradients_with_checkpointing(tiny_model):
    from diffusers import UNet2DConditionModel
    from lorabooth.trainer.lora import add_lora
    from transformers import CLIPTextModel

    te = CLIPTextModel.from_pretrained(tiny_model, subfolder="text_encoder")
    unet = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet")
    te.requires_grad_(False)
    add_lora(te, r=2, alpha=2, dropout=0.0, targets=["q_proj", "v_proj"])
    for name, p in te.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # so lora_A gets gradient too
    enable_gradient_checkpointing(unet, te)
    te.train()
    encoder = te.text_model.encoder if hasattr(te, "text_model") else te.encoder  # transformers 4 / 5
    assert encoder.gradient_checkpointing
    ids = torch.tensor([[49406, 5, 6, 7, 49407]]).clamp(max=te.config.vocab_size - 1)
    te(ids)[0].pow(2).mean().backward()
    grads = {n: p.grad for n, p in te.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values()), \
        [n for n, g in grads.items() if g is None or g.abs().sum() == 0]


def _tiny_inputs(pipe):
    gen = torch.Generator().manual_seed(0)
    ids = pipe.tokenizer("a photo of sks dog", padding="max_length", max_length=77, return_tensors="pt").input_ids
    latents = torch.randn(1, 4, 16, 16, generator=gen)
    return ids, latents


@torch.no_grad()
def _outputs(text_encoder, unet, ids, latents):
    states = text_encoder(ids)[0]
    return states, unet(latents, torch.tensor([500]), states).sample


def test_files_load_in_diffusers_and_peft_with_equal_outputs(lora_run, tiny_model):
    """diffusers' load_lora_weights (our single file) == PEFT (our PEFT folders) == our own loader."""
    from diffusers import StableDiffusionPipeline
    from lorabooth.trainer.lora import add_lora, load_peft_folder
    from peft import PeftModel

    out, _ = lora_run
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    ids, latents = _tiny_inputs(pipe)
    base_states, base_pred = _outputs(pipe.text_encoder, pipe.unet, ids, latents)
    pipe.load_lora_weights(str(out))
    d_states, d_pred = _outputs(pipe.text_encoder, pipe.unet, ids, latents)
    assert not torch.allclose(d_pred, base_pred, atol=1e-5)  # the adapter changes the model

    fresh = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    p_te = PeftModel.from_pretrained(fresh.text_encoder, str(out / "text_encoder"))
    p_unet = PeftModel.from_pretrained(fresh.unet, str(out / "unet"))
    p_states, p_pred = _outputs(p_te, p_unet, ids, latents)
    torch.testing.assert_close(d_states, p_states, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(d_pred, p_pred, rtol=1e-5, atol=1e-5)

    ours = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None)
    for name, model, r, alpha, targets in (("unet", ours.unet, 4, 8, ["to_q", "to_k", "to_v", "to_out.0"]),
                                           ("text_encoder", ours.text_encoder, 2, 3,
                                            ["q_proj", "k_proj", "v_proj", "out_proj"])):
        add_lora(model, r=r, alpha=alpha, dropout=0.0, targets=targets)
        load_peft_folder(out / name, model)
    o_states, o_pred = _outputs(ours.text_encoder, ours.unet, ids, latents)
    torch.testing.assert_close(o_states, p_states, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o_pred, p_pred, rtol=1e-5, atol=1e-5)
