"""Shared fixtures: one tiny random-weight SD pipeline and a few instance images per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from lorabooth.trainer.testing import build_tiny_pipeline, write_instance_images


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 32-px pipeline (VAE factor 2, UNet down-sampling 2): resolution must be a multiple of 4."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd") / "model", sample_size=32, vae_factor=2)


@pytest.fixture(scope="session")
def instance_dir(tmp_path_factory) -> Path:
    return write_instance_images(tmp_path_factory.mktemp("instance") / "images", count=3, size=40)


def base_flags(model: Path, instance: Path, output: Path, **extra) -> list[str]:
    """Flags for a fast run; keyword arguments add or override flags (True -> bare switch)."""
    flags = {
        "pretrained_model_name_or_path": str(model),
        "instance_data_dir": str(instance),
        "instance_prompt": "a photo of sks dog",
        "output_dir": str(output),
        "resolution": 32,
        "train_batch_size": 1,
        "max_train_steps": 4,
        "checkpointing_steps": 1000,
        "learning_rate": 1e-3,
        "lr_warmup_steps": 0,
        "report_to": "none",
        "seed": 7,
    }
    flags.update(extra)
    argv: list[str] = []
    for key, value in flags.items():
        if value is False or value is None:
            continue
        argv.append(f"--{key}")
        if value is not True:
            argv.append(str(value))
    return argv
