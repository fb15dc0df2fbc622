"""A shorter `make demo` on the shipped world model: every artefact is written and the prior holds."""

from __future__ import annotations

import json

import pytest

from lorabooth.demo import DEFAULT_MODEL, build_parser, run

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not (DEFAULT_MODEL / "model_index.json").is_file(), reason="assets/world-model is not shipped")
def test_short_demo_writes_everything_and_keeps_the_prior(tmp_path):
    out = tmp_path / "demo"
    opts = build_parser().parse_args([
        "--output_dir", str(out), "--max_train_steps", "100", "--num_class_images", "8", "--eval_n", "8",
    ])
    metrics = run(opts)
    base, tuned = metrics["base"], metrics["adapter"]
    assert tuned["subject_fidelity"] >= base["subject_fidelity"]
    # Prior preservation: the class prompt must not turn into the subject (checkered purple star).
    assert tuned["pres"] <= base["pres"] + 0.25
    for rel in ("grid.png", "metrics.json", "adapter/pytorch_lora_weights.safetensors", "adapter/unet",
                "adapter/text_encoder", "adapter/README.md"):
        assert (out / rel).exists(), rel
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["adapter"] == tuned and saved["settings"]["prior_preservation"] is True
