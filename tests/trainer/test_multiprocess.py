"""`accelerate launch --cpu --num_processes 2 trainer/train_dreambooth.py` (gloo) trains correctly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.trainer.conftest import base_flags

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "trainer" / "train_dreambooth.py"


def test_two_cpu_processes_with_accelerate_launch(tiny_model, instance_dir, tmp_path):
    out = tmp_path / "out"
    argv = base_flags(tiny_model, instance_dir, out, use_lora=True, train_text_encoder=True, max_train_steps=4,
                      checkpointing_steps=2, resolution=16, learning_rate=1e-2)
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517", str(SCRIPT), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # Each process saved its own RNG and noise-generator state; the main process saved the adapters.
    ckpt = out / "checkpoint-4"
    for rank in (0, 1):
        assert (ckpt / f"random_states_{rank}.pkl").is_file()
        assert json.loads((ckpt / f"trainer_state_{rank}.json").read_text())["num_processes"] == 2
    weights = load_file(str(out / "pytorch_lora_weights.safetensors"))
    b = [v for k, v in weights.items() if ".lora_B." in k]
    assert b and all(v.abs().sum() > 0 for v in b)  # both UNet and text-encoder adapters trained
    assert any(k.startswith("text_encoder.") for k in weights)
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # logged once (main process), not once per process
