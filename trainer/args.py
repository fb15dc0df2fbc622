"""Command-line flags of the DreamBooth trainer, ``--config file.toml``, and the resolved config.

The flag names and meanings follow PEFT's and diffusers' DreamBooth examples, so commands people
already type keep working. A TOML config uses the same names as keys (without ``--``); flags given
on the command line override the file. The resolved config is written into the output folder so a
run can be repeated exactly with ``--config <output_dir>/lorabooth_train.toml``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from lorabooth.adapters.serialization import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

RESOLVED_CONFIG_NAME = "lorabooth_train.toml"

# Flags that may change between a run and its resumption without making it "a different run".
RESUMABLE_KEYS = frozenset(
    {
        "config", "output_dir", "resume_from_checkpoint", "max_train_steps", "num_train_epochs",
        "checkpointing_steps", "checkpoints_total_limit", "validation_prompt", "num_validation_images",
        "validation_steps", "validation_at_start", "report_to", "logging_dir", "num_dataloader_workers",
        "sample_batch_size", "prior_generation_precision", "num_class_images", "class_data_dir",
        "enable_xformers_memory_efficient_attention", "local_rank", "allow_tf32", "gradient_checkpointing",
    }
)

REQUIRED = ("pretrained_model_name_or_path", "instance_data_dir", "instance_prompt")

UNET_TARGETS = "to_q,to_k,to_v,to_out.0"
TEXT_ENCODER_TARGETS = "q_proj,k_proj,v_proj,out_proj"


class ConfigError(ValueError):
    """A flag, config key or input that cannot work; raised before any training starts."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_dreambooth",
        description="DreamBooth fine-tuning (LoRA with --use_lora, else full) of a Stable-Diffusion-style model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = p.add_argument
    g = p.add_argument_group("model and data")
    g.add_argument("--config", type=str, default=None,
                   help="TOML file whose keys are these flag names (without --); command-line flags override it.")
    g.add_argument("--pretrained_model_name_or_path", type=str, default=None,
                   help="Base model: a local diffusers folder or a hub id (required).")
    g.add_argument("--revision", type=str, default=None, help="Hub revision (branch, tag or commit) of the base model.")
    g.add_argument("--tokenizer_name", type=str, default=None, help="Tokenizer path if not the model's own.")
    g.add_argument("--instance_data_dir", type=str, default=None,
                   help="Folder of images of the subject (required). Every file must be an image.")
    g.add_argument("--instance_prompt", type=str, default=None,
                   help="Prompt with the rare identifier bound to the subject, e.g. 'a photo of sks dog' (required).")
    g.add_argument("--class_data_dir", type=str, default=None,
                   help="Folder of class images for prior preservation; missing ones are generated into it.")
    g.add_argument("--class_prompt", type=str, default=None,
                   help="Prompt of the subject's class without the identifier, e.g. 'a photo of dog'.")
    g.add_argument("--with_prior_preservation", action="store_true",
                   help="Add the prior-preservation loss on class images (the DreamBooth paper's remedy for drift).")
    g.add_argument("--prior_loss_weight", type=float, default=1.0, help="Weight of the prior-preservation loss.")
    g.add_argument("--num_class_images", type=int, default=100,
                   help="Minimum number of class images; missing ones are sampled from the base model.")
    g.add_argument("--sample_batch_size", type=int, default=4, help="Batch size for generating class images.")
    g.add_argument("--prior_generation_precision", type=str, default=None, choices=["no", "fp32", "fp16", "bf16"],
                   help="Precision for class-image generation; default fp16 on GPU, fp32 on CPU.")
    g.add_argument("--output_dir", type=str, default="text-inversion-model",
                   help="Where the adapter, checkpoints, samples, logs and resolved config go.")
    g.add_argument("--seed", type=int, default=None,
                   help="Seed for reproducible training (data order, noise, timesteps, LoRA init); default 0.")
    g.add_argument("--resolution", type=int, default=512,
                   help="Training image size in pixels; must be divisible by the VAE factor times the UNet's down-sampling.")
    g.add_argument("--center_crop", action="store_true",
                   help="Centre-crop images after resizing (default: a seeded random crop).")
    g.add_argument("--cache_latents", action="store_true",
                   help="Encode every training image with the VAE once, then free the VAE.")
    g.add_argument("--pre_compute_text_embeddings", action="store_true",
                   help="Encode the prompts once, then free the text encoder (not with --train_text_encoder).")
    g.add_argument("--num_dataloader_workers", type=int, default=0,
                   help="Worker processes for image loading (0: load in the training process).")

    g = p.add_argument_group("what to train")
    g.add_argument("--train_text_encoder", action="store_true", help="Also train the text encoder (LoRA or full).")
    g.add_argument("--use_lora", action="store_true", help="Train LoRA adapters; without it, full fine-tuning.")
    g.add_argument("--lora_r", type=int, default=8, help="LoRA rank of the UNet adapter.")
    g.add_argument("--lora_alpha", type=float, default=32, help="LoRA alpha of the UNet adapter (scaling = alpha / r).")
    g.add_argument("--lora_dropout", type=float, default=0.0, help="Dropout on the UNet LoRA input.")
    g.add_argument("--lora_bias", type=str, default="none", choices=["none", "all", "lora_only"],
                   help="Which biases the UNet adapter trains.")
    g.add_argument("--lora_target_modules", type=str, default=UNET_TARGETS,
                   help="Comma-separated UNet module names (suffixes) that get LoRA.")
    g.add_argument("--lora_text_encoder_r", type=int, default=8, help="LoRA rank of the text-encoder adapter.")
    g.add_argument("--lora_text_encoder_alpha", type=float, default=32, help="LoRA alpha of the text-encoder adapter.")
    g.add_argument("--lora_text_encoder_dropout", type=float, default=0.0, help="Dropout on the text-encoder LoRA input.")
    g.add_argument("--lora_text_encoder_bias", type=str, default="none", choices=["none", "all", "lora_only"],
                   help="Which biases the text-encoder adapter trains.")
    g.add_argument("--lora_text_encoder_target_modules", type=str, default=TEXT_ENCODER_TARGETS,
                   help="Comma-separated text-encoder module names that get LoRA.")
    g.add_argument("--rank", type=int, default=None,
                   help="diffusers' alias: sets r and alpha (= r) of both UNet and text-encoder adapters.")

    g = p.add_argument_group("optimisation")
    g.add_argument("--train_batch_size", type=int, default=4, help="Instance images per step per process "
                   "(prior preservation adds as many class images).")
    g.add_argument("--num_train_epochs", type=int, default=1, help="Epochs; ignored when --max_train_steps is set.")
    g.add_argument("--max_train_steps", type=int, default=None, help="Total optimiser steps; overrides epochs.")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1, help="Batches accumulated per optimiser step.")
    g.add_argument("--gradient_checkpointing", action="store_true",
                   help="Recompute activations in backward (UNet and trained text encoder) to save memory.")
    g.add_argument("--learning_rate", type=float, default=5e-6, help="Peak learning rate (after warm-up).")
    g.add_argument("--scale_lr", action="store_true",
                   help="Multiply the learning rate by processes x accumulation steps x batch size.")
    g.add_argument("--lr_scheduler", type=str, default="constant",
                   choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"],
                   help="Learning-rate schedule.")
    g.add_argument("--lr_warmup_steps", type=int, default=500, help="Warm-up steps of the schedule.")
    g.add_argument("--lr_num_cycles", type=int, default=1, help="Hard restarts of cosine_with_restarts.")
    g.add_argument("--lr_power", type=float, default=1.0, help="Power of the polynomial schedule.")
    g.add_argument("--use_8bit_adam", action="store_true", help="8-bit AdamW from bitsandbytes (saves optimiser memory).")
    g.add_argument("--adam_beta1", type=float, default=0.9, help="AdamW beta1.")
    g.add_argument("--adam_beta2", type=float, default=0.999, help="AdamW beta2.")
    g.add_argument("--adam_weight_decay", type=float, default=1e-2, help="AdamW weight decay.")
    g.add_argument("--adam_epsilon", type=float, default=1e-08, help="AdamW epsilon.")
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm.")
    g.add_argument("--snr_gamma", type=float, default=None,
                   help="Min-SNR loss weighting gamma (5.0 is typical); off by default.")
    g.add_argument("--noise_offset", type=float, default=0.0, help="Scale of per-channel noise offset (0: off).")
    g.add_argument("--mixed_precision", type=str, default=None, choices=["no", "fp16", "bf16"],
                   help="Frozen weights in half precision, trainable ones in fp32; default: accelerate's config.")
    g.add_argument("--enable_xformers_memory_efficient_attention", action="store_true",
                   help="Use xformers attention (else PyTorch SDPA); fails clearly when xformers is missing.")
    g.add_argument("--allow_tf32", action="store_true", help="Allow TF32 matmuls on Ampere GPUs.")
    g.add_argument("--local_rank", type=int, default=-1, help="Set by launchers; not needed with accelerate.")

    g = p.add_argument_group("checkpoints, validation, logging")
    g.add_argument("--checkpointing_steps", type=int, default=500,
                   help="Save a resumable checkpoint every N optimiser steps.")
    g.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most N checkpoints (oldest go).")
    g.add_argument("--resume_from_checkpoint", type=str, default=None,
                   help='Checkpoint folder to resume from, or "latest" for the newest in --output_dir.')
    g.add_argument("--validation_prompt", type=str, default=None, help="Prompt sampled every --validation_steps.")
    g.add_argument("--num_validation_images", type=int, default=4, help="Images per validation.")
    g.add_argument("--validation_steps", type=int, default=100, help="Validate every N optimiser steps.")
    g.add_argument("--validation_at_start", action="store_true", help="Also validate before the first step.")
    g.add_argument("--num_inference_steps", type=int, default=25, help="Denoising steps for validation and samples.")
    g.add_argument("--report_to", type=str, default="tensorboard",
                   help='Tracker for loss/lr/images: "tensorboard", "none", or any accelerate tracker.')
    g.add_argument("--logging_dir", type=str, default="logs", help="TensorBoard folder, relative to --output_dir.")
    del add
    return p


def _load_toml(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown key(s) {', '.join(unknown)}; keys are the flag names without '--' "
            f"(see --help)"
        )
    data.pop("config", None)
    return data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags (and ``--config``), apply aliases and defaults, and check flag combinations."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        parser.set_defaults(**_load_toml(pre.config, parser))
    args = parser.parse_args(argv)
    env_rank = int(os.environ.get("LOCAL_RANK", "-1"))
    if env_rank != -1:
        args.local_rank = env_rank
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Flag-level checks and aliases; input files are checked later by ``checks.check_inputs``."""
    missing = [f"--{k}" for k in REQUIRED if not getattr(args, k)]
    if missing:
        raise ConfigError(f"missing required flag(s): {', '.join(missing)} (on the command line or in --config)")
    if args.rank is not None:
        args.lora_r = args.lora_text_encoder_r = args.rank
        args.lora_alpha = args.lora_text_encoder_alpha = float(args.rank)
    if args.seed is None:
        args.seed = 0
    if args.with_prior_preservation:
        if not args.class_prompt:
            raise ConfigError("--with_prior_preservation needs --class_prompt (e.g. 'a photo of dog')")
        if not args.class_data_dir:
            raise ConfigError("--with_prior_preservation needs --class_data_dir (a folder; missing images are generated)")
    if args.cache_latents and not args.center_crop:
        # Each image is encoded once, so its crop cannot change from epoch to epoch.
        print("note: --cache_latents implies --center_crop", file=sys.stderr)
        args.center_crop = True
    if args.train_text_encoder and args.pre_compute_text_embeddings:
        raise ConfigError("--pre_compute_text_embeddings cannot be used with --train_text_encoder")
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps",
                 "sample_batch_size", "num_class_images", "resolution"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1 (got {getattr(args, name)})")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        raise ConfigError(f"--max_train_steps must be >= 1 (got {args.max_train_steps})")
    for name in ("lora_r", "lora_text_encoder_r"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1 (got {getattr(args, name)})")
    if args.use_lora:
        # PEFT's LoRA layers raise NotImplementedError for these; fail before loading anything.
        for name in ("lora_bias", "lora_text_encoder_bias"):
            if getattr(args, name) != "none":
                raise ConfigError(f"--{name} {getattr(args, name)}: only 'none' is supported by the adapter files we "
                                  "write (diffusers cannot load LoRA biases)")


def update_steps(num_batches_per_epoch: int, args: argparse.Namespace) -> tuple[int, int]:
    """Optimiser steps per epoch and the number of epochs needed for ``max_train_steps``."""
    per_epoch = max(1, math.ceil(num_batches_per_epoch / args.gradient_accumulation_steps))
    if args.max_train_steps is None:
        args.max_train_steps = per_epoch * args.num_train_epochs
    epochs = math.ceil(args.max_train_steps / per_epoch)
    return per_epoch, epochs


# ---- resolved config: a TOML file that `--config` reads back ---------------------------------------

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def config_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that describe the run (None values dropped: TOML has no null)."""
    skip = {"config", "local_rank", "resume_from_checkpoint"}
    return {k: v for k, v in sorted(vars(args).items()) if v is not None and k not in skip}


def dumps_toml(values: dict[str, Any]) -> str:
    lines = ["# lorabooth DreamBooth run; repeat it with: lorabooth train --config <this file>"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_resolved_config(args: argparse.Namespace, output_dir: Path) -> Path:
    path = output_dir / RESOLVED_CONFIG_NAME
    atomic_write_text(path, dumps_toml(config_dict(args)))
    return path


def read_resolved_config(output_dir: Path) -> dict[str, Any] | None:
    path = output_dir / RESOLVED_CONFIG_NAME
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def run_differences(previous: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Keys where ``args`` describes a different run from the one recorded in ``previous``."""
    current = config_dict(args)
    keys = (set(previous) | set(current)) - RESUMABLE_KEYS
    return sorted(k for k in keys if previous.get(k) != current.get(k))
