"""Shared fixtures for the app tests: a tiny pipeline, a demo subject, a Booth on a temp data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from lorabooth.trainer.testing import build_tiny_pipeline, write_instance_images

HERE = Path(__file__).parent
# Short runs of the real trainer on the tiny pipeline: tiny enough for a 2-core CPU.
TINY_TRAIN = {
    "instance_prompt": "a photo of sks dog",
    "resolution": 32,
    "max_train_steps": 6,
    "checkpointing_steps": 3,
    "validation_steps": 3,
    "num_validation_images": 1,
    "num_inference_steps": 2,
    "learning_rate": 1e-2,
    "lora_r": 4,
    "lora_alpha": 4,
    "train_batch_size": 1,
    "seed": 0,
    "lr_warmup_steps": 0,
}


@pytest.fixture(scope="session")
def tiny_train() -> dict:
    return dict(TINY_TRAIN)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd", sample_size=32)


@pytest.fixture(scope="session")
def demo_subject(tmp_path_factory) -> dict:
    images = write_instance_images(tmp_path_factory.mktemp("subject") / "images", count=3, size=32)
    return {"instance_prompt": "a photo of sks dog", "class_prompt": "a photo of dog", "images_dir": str(images)}


@pytest.fixture(scope="session")
def trained_adapter(tmp_path_factory, tiny_model, demo_subject) -> Path:
    """One real training run (PEFT folders + diffusers file), shared by the preview/mix/gallery tests."""
    import subprocess
    import sys

    from lorabooth.app.jobs import flags_to_argv

    out = tmp_path_factory.mktemp("trained") / "out"
    # no checkpoints or validation images mid-run: only the final adapter files are needed here
    params = {**TINY_TRAIN, "checkpointing_steps": 1000, "validation_steps": 1000,
              "pretrained_model_name_or_path": str(tiny_model), "use_lora": True,
              "instance_data_dir": demo_subject["images_dir"], "report_to": "none", "train_text_encoder": True,
              "lora_text_encoder_r": 2, "lora_text_encoder_alpha": 4}
    cmd = [sys.executable, "-m", "lorabooth.trainer.train_dreambooth", *flags_to_argv(params), "--output_dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
