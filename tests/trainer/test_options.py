"""Less common paths: fp16/bf16 mixed precision, 8-bit Adam, caches, v-prediction, Min-SNR, noise offset, class images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lorabooth.trainer.args import parse_args
from lorabooth.trainer.class_images import generate_class_images
from lorabooth.trainer.testing import build_tiny_pipeline
from lorabooth.trainer.train_dreambooth import train
from PIL import Image
from safetensors.torch import load_file

from tests.trainer.conftest import base_flags


def test_caches_vprediction_snr_offset_accumulation_workers(instance_dir, tmp_path):
    model = build_tiny_pipeline(tmp_path / "vpred", prediction_type="v_prediction")
    out = tmp_path / "out"
    args = parse_args(base_flags(
        model, instance_dir, out, use_lora=True, cache_latents=True, pre_compute_text_embeddings=True,
        snr_gamma=5.0, noise_offset=0.05, gradient_accumulation_steps=2, max_train_steps=2, resolution=16,
        num_dataloader_workers=1,
    ))
    result = train(args)
    assert result.global_step == 2 and len(result.losses) == 2 and all(np.isfinite(result.losses))
    weights = load_file(str(out / "unet" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in weights.items() if ".lora_B." in k)
    assert not (out / "text_encoder").exists()  # the text encoder was not trained


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_keeps_frozen_base_in_half_and_lora_in_fp32(tiny_model, instance_dir, tmp_path, precision):
    # fp16 runs accelerate's GradScaler (on CPU too): fp16 trainable weights would fail with
    # "Attempting to unscale FP16 gradients"; gradient checkpointing is on, as on a T4.
    out = tmp_path / "out"
    result = train(parse_args(base_flags(tiny_model, instance_dir, out, use_lora=True, train_text_encoder=True,
                                         mixed_precision=precision, max_train_steps=2, resolution=16,
                                         gradient_checkpointing=True)))
    assert len(result.losses) == 2 and np.isfinite(result.losses).all()
    half = {"bf16": "torch.bfloat16", "fp16": "torch.float16"}[precision]
    assert result.dtypes == {"frozen": half, "trainable": "torch.float32"}
    weights = load_file(str(out / "text_encoder" / "adapter_model.safetensors"))
    assert all(v.dtype == torch.float32 for v in weights.values())  # saved from the fp32 master weights
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # the steps were applied


def test_class_images_are_seeded_per_image_and_resumable(tiny_model, tmp_path):
    folder = tmp_path / "class"
    common = dict(resolution=16, seed=3, num_inference_steps=2, show_progress=False)
    assert generate_class_images(str(tiny_model), folder, "a photo of dog", 3, sample_batch_size=2, **common) == 3
    files = sorted(folder.glob("*.png"))
    first = {p.name: np.asarray(Image.open(p)).astype(int) for p in files}
    stamps = {p.name: p.stat().st_mtime_ns for p in files}
    files[1].unlink()  # as if the run was killed before writing it
    assert generate_class_images(str(tiny_model), folder, "a photo of dog", 3, sample_batch_size=3, **common) == 1
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png") if p.name != files[1].name} == \
        {k: v for k, v in stamps.items() if k != files[1].name}  # images already there are kept
    again = np.asarray(Image.open(files[1])).astype(int)
    assert np.abs(again - first[files[1].name]).max() <= 2  # same seed -> same image, whatever the batch
    assert np.abs(first[files[0].name] - first[files[2].name]).max() > 2  # different seeds differ
    assert generate_class_images(str(tiny_model), folder, "a photo of dog", 3, **common) == 0
    assert not list(folder.glob(".*tmp"))


def test_8bit_adam_is_bitsandbytes_and_trains(tiny_model, instance_dir, tmp_path):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is a dependency of lorabooth; reinstall with `make install`")
    out = tmp_path / "out"
    result = train(parse_args(base_flags(tiny_model, instance_dir, out, use_lora=True, use_8bit_adam=True,
                                         max_train_steps=2, checkpointing_steps=2, resolution=16)))
    assert len(result.losses) == 2 and np.isfinite(result.losses).all()
    saved = torch.load(out / "checkpoint-2" / "optimizer.bin", weights_only=False)
    # bitsandbytes' optimiser state format (plain torch AdamW has neither key); it quantises the moments of
    # tensors of >= 4096 elements to uint8, bigger than any LoRA factor of the tiny model
    assert all("__bnb_optimizer_quant_state__" in s for s in saved["state"].values())
    assert "t_beta3" in saved["param_groups"][0]
    weights = load_file(str(out / "unet" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in weights.items() if ".lora_B." in k)
