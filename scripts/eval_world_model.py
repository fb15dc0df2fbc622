#!/usr/bin/env python
"""Measure the shipped world model and its evaluator; write the numbers to <model>/scores.json.

    python scripts/eval_world_model.py --model assets/world-model

Prints, in one run: the evaluator's accuracy on held-out generator images (as drawn, and after a
round-trip through the model's VAE, the best its decoder can show), the base model's prompt
adherence on seen and held-out colour x shape combinations (at the recommended and at the test's
settings), and the DreamBooth metrics of the base model for the demo subject (a baseline: the base
model has never seen the subject, so its fidelity should be near 0).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from lorabooth.adapters.serialization import atomic_write_text
from lorabooth.world.checks import check_model_folder
from lorabooth.world.metrics import (
    SubjectSpec,
    as_generate_fn,
    background_adherence,
    evaluate_dreambooth,
    evaluator_accuracy,
    prompt_adherence_report,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/world-model", help="diffusers folder to score; scores.json is written there")
    p.add_argument("--subject", default="assets/demo-subject/subject.json", help="subject.json for the DreamBooth baseline")
    p.add_argument("--n", type=int, default=128, help="samples for prompt adherence on seen combinations")
    p.add_argument("--steps", type=int, default=20, help="sampler steps at the recommended settings")
    p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
    p.add_argument("--test_steps", type=int, default=15, help="sampler steps the slow tests use (recorded for them)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--evaluator_images", type=int, default=600, help="held-out generator images for the evaluator's accuracy")
    p.add_argument("--dreambooth_n", type=int, default=32, help="samples per prompt for the DreamBooth baseline")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = check_model_folder(args.model)
    t0 = time.time()
    scores: dict = {"evaluator_accuracy_heldout_images": evaluator_accuracy(args.evaluator_images, seed=999),
                    "evaluator_images": args.evaluator_images}
    print("evaluator accuracy:", scores["evaluator_accuracy_heldout_images"], flush=True)
    pipe = StableDiffusionPipeline.from_pretrained(model)
    # The VAE is the ceiling of what any sample can show: patterns do not survive it (a known gap of
    # this model), plain fills, which the adherence prompts ask for, mostly do.
    for key, patterns in (("vae_round_trip", True), ("vae_round_trip_plain_fills", False)):
        scores[f"evaluator_accuracy_{key}"] = evaluator_accuracy(args.evaluator_images, seed=999, vae=pipe.vae,
                                                                 allow_patterns=patterns)
        print(f"evaluator accuracy after a VAE round-trip ({'all fills' if patterns else 'plain fills'}):",
              scores[f"evaluator_accuracy_{key}"], flush=True)
    pipe.set_progress_bar_config(disable=True)
    gen = as_generate_fn(pipe, num_inference_steps=args.steps, guidance_scale=args.guidance, batch_size=64)
    for name, kw in (("seen", dict(n=args.n, seed=1, held_out=False)), ("held_out", dict(n=32, seed=1, held_out=True))):
        rep = prompt_adherence_report(gen, **kw)
        rep.pop("samples")
        scores[f"prompt_adherence_{name}"] = rep
        print(f"prompt adherence ({name} combos, {kw['n']} samples, {args.steps} steps, cfg {args.guidance}):",
              rep, flush=True)
    scores["background_adherence"] = background_adherence(gen, n=64, seed=1)
    print("background adherence (64 samples):", scores["background_adherence"], flush=True)
    test_gen = as_generate_fn(pipe, num_inference_steps=args.test_steps, guidance_scale=args.guidance, batch_size=64)
    rep = prompt_adherence_report(test_gen, n=64, seed=0)
    scores["prompt_adherence_test_settings"] = rep["prompt_adherence"]
    scores["test_settings"] = {"num_inference_steps": args.test_steps, "guidance_scale": args.guidance}
    print("prompt adherence at the test's settings (64 samples, seed 0):", rep["prompt_adherence"], flush=True)
    subject = SubjectSpec.from_json(args.subject)
    scores["dreambooth_baseline_base_model"] = evaluate_dreambooth(gen, subject, n=args.dreambooth_n, seed=0)
    print("DreamBooth metrics of the base model (baseline):", scores["dreambooth_baseline_base_model"], flush=True)
    scores["settings"] = {"num_inference_steps": args.steps, "guidance_scale": args.guidance,
                          "scheduler": type(pipe.scheduler).__name__}
    scores["eval_minutes"] = round((time.time() - t0) / 60, 1)
    atomic_write_text(Path(model) / "scores.json", json.dumps(scores, indent=2, default=float) + "\n")
    print(f"wrote {Path(model) / 'scores.json'}")


if __name__ == "__main__":
    main()
