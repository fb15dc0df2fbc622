"""Sample images from the model being trained: validation during training, samples at the end.

Sampling uses its own seeded generator and restores the global RNG afterwards, so validating never
changes the training run (a run with validation has the same loss curve as one without).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lorabooth.adapters.serialization import atomic_write


def build_pipeline(model_path: str, revision: str | None, unet, text_encoder, vae, tokenizer, dtype: torch.dtype):
    """A StableDiffusionPipeline around the training components (no copies of the weights)."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    kwargs = {"unet": unet, "vae": vae, "tokenizer": tokenizer, "safety_checker": None, "requires_safety_checker": False}
    if text_encoder is not None:
        kwargs["text_encoder"] = text_encoder
    pipe = StableDiffusionPipeline.from_pretrained(model_path, revision=revision, torch_dtype=dtype, **kwargs)
    # A fast multistep solver built from the model's own schedule (same prediction_type and betas).
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def sample_images(pipe, prompt: str, count: int, *, seed: int, resolution: int, steps: int, device) -> list:
    """``count`` PIL images for ``prompt``; image i always comes from seed ``seed + i``."""
    with torch.random.fork_rng(devices=[] if torch.device(device).type == "cpu" else [torch.device(device)]):
        generators = [torch.Generator(device="cpu").manual_seed(seed + i) for i in range(count)]
        return pipe(
            [prompt] * count, height=resolution, width=resolution, num_inference_steps=steps, generator=generators
        ).images


def save_png(image, path: Path) -> Path:
    """Write a PIL image as PNG atomically (a killed run never leaves half an image)."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


def log_images(accelerator, images: list, step: int, tag: str = "validation") -> None:
    """Send images to the TensorBoard tracker, if one is active."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            arr = np.stack([np.asarray(img) for img in images])
            tracker.writer.add_images(tag, arr, step, dataformats="NHWC")
