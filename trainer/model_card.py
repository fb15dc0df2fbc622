"""The README model card written next to a trained adapter."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import RESOLVED_CONFIG_NAME


def model_card(args: argparse.Namespace, sample_images: list[Path], output_dir: Path) -> str:
    kind = "LoRA" if args.use_lora else "full fine-tune"
    parts = ["UNet"] + (["text encoder"] if args.train_text_encoder else [])
    lines = [
        "---",
        f"base_model: {args.pretrained_model_name_or_path}",
        "library_name: diffusers",
        "tags: [text-to-image, dreambooth, lorabooth" + (", lora" if args.use_lora else "") + "]",
        f"instance_prompt: {args.instance_prompt!r}",
        "---",
        "",
        f"# DreamBooth {kind}: `{args.instance_prompt}`",
        "",
        f"Trained with lorabooth on `{args.pretrained_model_name_or_path}` ({' + '.join(parts)}), "
        f"{args.max_train_steps} steps at {args.resolution}px, learning rate {args.learning_rate:g}"
        + (f", prior preservation with `{args.class_prompt}` (weight {args.prior_loss_weight:g})"
           if args.with_prior_preservation else "")
        + ".",
        "",
        f"Use the rare identifier in your prompt: **{args.instance_prompt}**.",
        "",
    ]
    if args.use_lora:
        lines += [
            "```python",
            "from diffusers import StableDiffusionPipeline",
            f'pipe = StableDiffusionPipeline.from_pretrained("{args.pretrained_model_name_or_path}")',
            f'pipe.load_lora_weights("{output_dir}")  # pytorch_lora_weights.safetensors',
            f'image = pipe("{args.instance_prompt}").images[0]',
            "```",
            "",
            "Files: `unet/` and `text_encoder/` (PEFT layout), `pytorch_lora_weights.safetensors` (diffusers), "
            f"`{RESOLVED_CONFIG_NAME}` (repeat the run with `lorabooth train --config {RESOLVED_CONFIG_NAME}`).",
        ]
    else:
        lines += [f"The folder is a complete diffusers pipeline; `{RESOLVED_CONFIG_NAME}` repeats the run."]
    if sample_images:
        lines += ["", "## Samples", ""]
        lines += [f"![sample]({p.relative_to(output_dir).as_posix()})" for p in sample_images]
    return "\n".join(lines) + "\n"
