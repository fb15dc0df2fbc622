"""Kill a run after its step-20 checkpoint, resume it: the loss curve equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lorabooth.trainer.testing import write_instance_images
from lorabooth.trainer.train_dreambooth import main
from safetensors.torch import load_file

from tests.trainer.conftest import base_flags

pytestmark = pytest.mark.slow


def _losses(out: Path) -> dict[int, float]:
    """The last logged loss of every step (a resumed run re-logs the steps it redoes)."""
    found: dict[int, float] = {}
    for line in (out / "train_log.jsonl").read_text().splitlines():
        row = json.loads(line)
        found[row["step"]] = row["loss"]
    return found


def test_kill_and_resume_equals_uninterrupted_run(tiny_model, instance_dir, tmp_path):
    class_dir = write_instance_images(tmp_path / "class", count=2, size=36, seed=5)  # no generation needed
    common = dict(
        use_lora=True, train_text_encoder=True, with_prior_preservation=True, class_prompt="a photo of dog",
        class_data_dir=class_dir, num_class_images=2, lora_dropout=0.1, lora_text_encoder_dropout=0.1,
        max_train_steps=40, checkpointing_steps=20, checkpoints_total_limit=1, lr_scheduler="cosine",
        lr_warmup_steps=5, learning_rate=5e-3, validation_prompt="a photo of sks dog", validation_steps=15,
        num_validation_images=1, num_inference_steps=2, resolution=16,
    )
    straight = tmp_path / "straight"
    assert main(base_flags(tiny_model, instance_dir, straight, **common)) == 0

    resumed = tmp_path / "resumed"
    argv = base_flags(tiny_model, instance_dir, resumed, **common)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lorabooth.trainer.train_dreambooth", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 240
    while not (resumed / "checkpoint-20").is_dir():
        assert proc.poll() is None, "trainer exited before its step-20 checkpoint"
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # a hard kill: no handler, no cleanup
    proc.wait()
    killed_at = max(_losses(resumed))
    assert 20 <= killed_at < 40 and not (resumed / "pytorch_lora_weights.safetensors").exists()

    assert main(argv + ["--resume_from_checkpoint", "latest"]) == 0
    a, b = _losses(straight), _losses(resumed)
    assert sorted(a) == sorted(b) == list(range(1, 41))
    assert [b[s] for s in range(21, 41)] == [a[s] for s in range(21, 41)]  # bit-exact, not approximately
    assert len({round(v, 6) for v in a.values()}) > 30  # the losses really vary from step to step
    for part in ("unet", "text_encoder"):
        wa = load_file(str(straight / part / "adapter_model.safetensors"))
        wb = load_file(str(resumed / part / "adapter_model.safetensors"))
        assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert [p.name for p in sorted(resumed.glob("checkpoint-*"))] == ["checkpoint-40"]  # pruned to the limit
    assert not list(resumed.glob(".checkpoint-*"))  # no half-written checkpoint left behind
