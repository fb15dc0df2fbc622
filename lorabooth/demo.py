"""`make demo`: DreamBooth LoRA on the shipped shapes-world model, end to end, on a laptop CPU.

Trains a LoRA adapter (UNet + text encoder, prior preservation) on ``assets/demo-subject/`` over
``assets/world-model/``, then writes into ``--output_dir`` (default ``outputs/demo``):

- ``adapter/``: ``unet/`` + ``text_encoder/`` (PEFT), ``pytorch_lora_weights.safetensors``
  (diffusers), the resolved config and a model card;
- ``grid.png``: base model (top row) vs adapter (bottom row) for the subject prompt, the class
  prompt and a composed prompt;
- ``metrics.json``: the world evaluator's subject fidelity, prior drift (PRES), class diversity
  (DIV) and composition, for the base model and for the adapter.

    python -m lorabooth.demo                          # the full demo (a few minutes)
    python -m lorabooth.demo --no_prior_preservation  # the DreamBooth paper's ablation: more drift
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "assets" / "world-model"
DEFAULT_SUBJECT = REPO / "assets" / "demo-subject"
DEMO_UNET_TARGETS = "to_q,to_k,to_v,to_out.0,proj_in,proj_out,ff.net.0.proj,ff.net.2,conv1,conv2,time_emb_proj"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorabooth demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="base diffusers pipeline folder")
    p.add_argument("--subject", default=str(DEFAULT_SUBJECT), help="instance images + subject.json")
    p.add_argument("--output_dir", default=None,
                   help="where everything is written (default outputs/demo, or outputs/demo-no-prior for the ablation)")
    p.add_argument("--max_train_steps", type=int, default=800,
                   help="optimiser steps (400 bind the subject only weakly under prior preservation)")
    p.add_argument("--learning_rate", type=float, default=1e-3, help="LoRA learning rate")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = rank) of UNet and text encoder")
    p.add_argument("--lora_target_modules", default=DEMO_UNET_TARGETS,
                   help="UNet modules that get LoRA; a 4M-parameter UNet needs more than the attention projections")
    p.add_argument("--noise_offset", type=float, default=0.15,
                   help="the world model's own training noise offset; without it a LoRA cannot move backgrounds")
    p.add_argument("--num_class_images", type=int, default=40, help="class images for prior preservation")
    p.add_argument("--prior_loss_weight", type=float, default=1.0, help="weight of the prior-preservation loss")
    p.add_argument("--no_prior_preservation", action="store_true", help="ablation: train without class images")
    p.add_argument("--eval_n", type=int, default=32, help="samples per metric prompt")
    p.add_argument("--seed", type=int, default=0, help="seed of training, class images and evaluation")
    return p


def _check_assets(model: Path, subject: Path) -> None:
    if not (model / "model_index.json").is_file():
        raise SystemExit(f"demo: no world model at {model} (expected a diffusers folder with model_index.json); "
                         f"it ships in assets/world-model, or pass --model PATH")
    if not (subject / "subject.json").is_file():
        raise SystemExit(f"demo: no subject.json in {subject}; pass --subject PATH (images + subject.json)")


def trainer_flags(opts: argparse.Namespace, subject_info: dict, resolution: int, out: Path) -> list[str]:
    flags = [
        "--pretrained_model_name_or_path", str(opts.model), "--instance_data_dir", str(opts.subject),
        "--instance_prompt", subject_info["instance_prompt"], "--output_dir", str(out / "adapter"),
        "--resolution", str(resolution), "--center_crop", "--use_lora", "--train_text_encoder",
        "--rank", str(opts.rank), "--lora_target_modules", opts.lora_target_modules, "--train_batch_size", "1", "--max_train_steps", str(opts.max_train_steps),
        "--learning_rate", str(opts.learning_rate), "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
        "--checkpointing_steps", str(max(50, opts.max_train_steps // 4)), "--checkpoints_total_limit", "1",
        "--seed", str(opts.seed), "--report_to", "tensorboard", "--num_inference_steps", "20",
        "--validation_prompt", subject_info["instance_prompt"], "--validation_steps", str(opts.max_train_steps),
        "--num_validation_images", "2", "--resume_from_checkpoint", "latest", "--noise_offset", str(opts.noise_offset),
    ]
    if not opts.no_prior_preservation:
        flags += ["--with_prior_preservation", "--class_prompt", subject_info["class_prompt"],
                  "--class_data_dir", str(out / "class_images"), "--num_class_images", str(opts.num_class_images),
                  "--prior_loss_weight", str(opts.prior_loss_weight), "--sample_batch_size", "8"]
    return flags


CELL = 128  # pixels per sample in the grid (64x64 samples, upscaled without smoothing)
HEADER = 18  # height of the prompt row
ROW_LABEL = 64  # width of the "base" / "adapter" column


def sample_grid(base_gen, tuned_gen, prompts: list[str], seed: int, per_prompt: int = 2):
    """Before/after grid: a header with each prompt over its ``per_prompt`` samples, then one row per
    model ("base", "adapter") with the same seeds, so each column differs only by the adapter."""
    from PIL import Image, ImageDraw

    width = ROW_LABEL + CELL * per_prompt * len(prompts)
    grid = Image.new("RGB", (width, HEADER + 2 * CELL), "white")
    draw = ImageDraw.Draw(grid)
    for k, prompt in enumerate(prompts):
        draw.text((ROW_LABEL + k * CELL * per_prompt + 4, 3), f'"{prompt}"', fill="black")
    for row, (name, gen) in enumerate((("base", base_gen), ("adapter", tuned_gen))):
        top = HEADER + row * CELL
        draw.text((6, top + CELL // 2 - 6), name, fill="black")
        for k, prompt in enumerate(prompts):
            for j, img in enumerate(gen([prompt] * per_prompt, seed + 1000 * k)):
                grid.paste(img.resize((CELL, CELL), Image.NEAREST), (ROW_LABEL + (k * per_prompt + j) * CELL, top))
    return grid


def run(opts: argparse.Namespace) -> dict:
    import torch
    from diffusers import StableDiffusionPipeline

    from lorabooth.trainer.args import parse_args
    from lorabooth.trainer.checks import latent_factors
    from lorabooth.trainer.train_dreambooth import train
    from lorabooth.trainer.validation import save_png
    from lorabooth.world.metrics import SubjectSpec, as_generate_fn, evaluate_dreambooth

    if opts.output_dir is None:
        opts.output_dir = "outputs/demo-no-prior" if opts.no_prior_preservation else "outputs/demo"
    model, subject_dir, out = Path(opts.model), Path(opts.subject), Path(opts.output_dir)
    _check_assets(model, subject_dir)
    info = json.loads((subject_dir / "subject.json").read_text())
    subject = SubjectSpec.from_json(subject_dir / "subject.json")
    vae_factor, _ = latent_factors(str(model), None)
    unet_cfg = json.loads((model / "unet" / "config.json").read_text())
    resolution = int(unet_cfg["sample_size"]) * vae_factor

    t0 = time.perf_counter()
    result = train(parse_args(trainer_flags(opts, info, resolution, out)))
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    base = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    base.set_progress_bar_config(disable=True)
    tuned = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    tuned.set_progress_bar_config(disable=True)
    tuned.load_lora_weights(str(out / "adapter"))  # the diffusers file, as a user would load it
    base_gen = as_generate_fn(base, size=resolution)
    tuned_gen = as_generate_fn(tuned, size=resolution)
    with torch.no_grad():
        metrics = {
            "base": evaluate_dreambooth(base_gen, subject, n=opts.eval_n, seed=opts.seed),
            "adapter": evaluate_dreambooth(tuned_gen, subject, n=opts.eval_n, seed=opts.seed),
        }
        composed = f"{subject.instance_prompt} on a yellow background"
        grid = sample_grid(base_gen, tuned_gen, [subject.instance_prompt, subject.class_prompt, composed], opts.seed)
    eval_s = time.perf_counter() - t1
    metrics["settings"] = {
        "prior_preservation": not opts.no_prior_preservation, "max_train_steps": opts.max_train_steps,
        "learning_rate": opts.learning_rate, "rank": opts.rank, "num_class_images": opts.num_class_images,
        "eval_n": opts.eval_n, "seed": opts.seed, "resolution": resolution,
    }
    metrics["seconds"] = {"train_incl_class_images": round(train_s, 1), "evaluate_and_grid": round(eval_s, 1)}
    metrics["steps_this_run"] = result.global_step - result.start_step

    from lorabooth.trainer.args import atomic_write_text

    grid_path = save_png(grid, out / "grid.png")
    metrics_path = out / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    metrics["paths"] = {"adapter": str(out / "adapter"), "grid": str(grid_path), "metrics": str(metrics_path)}
    return metrics


def _report(metrics: dict) -> str:
    rows = ["subject_fidelity", "subject_background", "pres", "pres_pattern", "pres_background", "div", "class_shape_rate", "composition"]
    lines = [f"{'metric':<18}{'base':>8}{'adapter':>9}"]
    lines += [f"{k:<18}{metrics['base'][k]:>8.3f}{metrics['adapter'][k]:>9.3f}" for k in rows]
    p = metrics["paths"]
    lines += [
        "",
        f"adapter (PEFT unet/ + text_encoder/, diffusers pytorch_lora_weights.safetensors): {p['adapter']}",
        f"before/after grid: {p['grid']}",
        f"metrics: {p['metrics']}",
        f"time: {metrics['seconds']['train_incl_class_images']:.0f} s training (incl. class images), "
        f"{metrics['seconds']['evaluate_and_grid']:.0f} s evaluation",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    from lorabooth.trainer.args import ConfigError

    try:
        metrics = run(opts)
    except ConfigError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    print(_report(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
