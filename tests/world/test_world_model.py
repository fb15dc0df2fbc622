"""The shipped world model: loads with plain diffusers, generates 64x64 images that follow the prompt."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from lorabooth.world.metrics import (
    as_generate_fn,
    background_adherence,
    evaluator_accuracy,
    prompt_adherence_report,
)

MODEL = Path(__file__).resolve().parents[2] / "assets" / "world-model"
SCORES = json.loads((MODEL / "scores.json").read_text()) if (MODEL / "scores.json").exists() else {}

# A little under what scripts/eval_world_model.py measured (recorded in assets/world-model/scores.json and the
# model card) with the same seed and settings; the test's own measurement must not fall below it.
ADHERENCE_LOWER_BOUND = 0.88  # measured 0.9375 (the shipped run; 0.797 for the 3-sitting model, 0.203 at step 1,467)
BACKGROUND_LOWER_BOUND = 0.90  # measured 1.0 over 64 samples at 20 steps, 0.09 before the noise offset
# The evaluator on 200 held-out plain-fill images (seed 31) after the model's VAE: measured shape 0.95, colour 0.995.
VAE_SHAPE_LOWER_BOUND = 0.92
VAE_COLOUR_LOWER_BOUND = 0.97


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(2)
    p = StableDiffusionPipeline.from_pretrained(MODEL)
    p.set_progress_bar_config(disable=True)
    return p


def test_model_folder_is_sd_shaped_and_small(pipe):
    index = json.loads((MODEL / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    assert type(pipe.unet).__name__ == "UNet2DConditionModel" and type(pipe.text_encoder).__name__ == "CLIPTextModel"
    names = {n for n, _ in pipe.unet.named_modules()}
    assert any(n.endswith("attn2.to_k") for n in names) and any(n.endswith("to_out.0") for n in names)
    files = [f for f in MODEL.rglob("*") if f.is_file()]
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".ckpt", ".pth")]
    assert sum(f.stat().st_size for f in files) <= 40e6


def test_generates_64px_images_that_depend_on_the_prompt(pipe):
    out = pipe(["a photo of a red circle", "a photo of a blue square"], num_inference_steps=8, guidance_scale=5.0,
               generator=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)], output_type="np")
    imgs = out.images
    assert imgs.shape == (2, 64, 64, 3) and np.isfinite(imgs).all()
    assert np.abs(imgs[0] - imgs[1]).mean() > 0.05  # same noise, different prompt -> a different image


@pytest.fixture(scope="module")
def generate(pipe):
    """The sampler at the settings scores.json recorded for the tests (scores do not depend on batch size)."""
    settings = SCORES.get("test_settings", {"num_inference_steps": 15, "guidance_scale": 5.0})
    return as_generate_fn(pipe, batch_size=64, **settings)


@pytest.mark.slow
def test_prompt_adherence_over_64_samples(generate):
    rep = prompt_adherence_report(generate, n=64, seed=0)
    assert rep["prompt_adherence"] >= ADHERENCE_LOWER_BOUND, rep


@pytest.mark.slow
def test_backgrounds_follow_the_prompt_not_the_noise(generate):
    # 0.09 (chance) before the noise offset, when the starting noise decided the background
    rep = background_adherence(generate, n=32, seed=0)
    assert rep["background_adherence"] >= BACKGROUND_LOWER_BOUND, rep


@pytest.mark.slow
def test_evaluator_reads_what_the_vae_can_show(pipe):
    # Held-out plain-fill generator images through the model's own VAE: the sharpest its decoder can
    # draw. The shape classifier never saw this VAE; this bounds how much adherence the evaluator misses.
    acc = evaluator_accuracy(200, seed=31, vae=pipe.vae, allow_patterns=False)
    assert acc["shape"] >= VAE_SHAPE_LOWER_BOUND and acc["colour"] >= VAE_COLOUR_LOWER_BOUND, acc
