"""Input checks that run before any model weight is loaded or any step is taken.

Every failure is a ``ConfigError`` naming the flag, file or folder and what would fix it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import RESOLVED_CONFIG_NAME, ConfigError, read_resolved_config, run_differences

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Side files people keep next to their images (captions, subject metadata); never training data.
SIDE_FILE_SUFFIXES = frozenset({".txt", ".json", ".md", ".toml", ".caption"})


def list_images(folder: str | Path, flag: str, *, allow_empty: bool = False) -> list[Path]:
    """The image files of ``folder`` in sorted order, each verified to decode.

    Hidden files and caption/metadata side files are ignored; anything else that is not a readable
    image is an error (it would otherwise be silently skipped or crash mid-run).
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.exists():
        raise ConfigError(f"{flag} {folder}: folder does not exist")
    if not folder.is_dir():
        raise ConfigError(f"{flag} {folder}: not a folder")
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except PermissionError:
        raise ConfigError(f"{flag} {folder}: folder is not readable (check its permissions)") from None
    images: list[Path] = []
    for path in entries:
        if path.is_dir() or path.suffix.lower() in SIDE_FILE_SUFFIXES:
            continue
        try:
            with Image.open(path) as img:
                img.verify()
        except PermissionError:
            raise ConfigError(f"{flag}: cannot read {path} (check its permissions)") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ConfigError(
                f"{flag}: {path} is not a readable image ({type(exc).__name__}); remove it or move it out of "
                f"{folder}"
            ) from None
        images.append(path)
    if not images and not allow_empty:
        raise ConfigError(f"{flag} {folder}: no images found (expected .png/.jpg/.webp files)")
    return images


def check_model_path(name_or_path: str) -> None:
    """A local path must be a diffusers folder; a hub id is left to ``from_pretrained``."""
    path = Path(name_or_path)
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists() or name_or_path.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise ConfigError(f"--pretrained_model_name_or_path {name_or_path}: no such folder")
        missing = [f"{sub}/" for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
                   if not (path / sub).is_dir()]
        if missing:
            raise ConfigError(
                f"--pretrained_model_name_or_path {name_or_path}: not a Stable-Diffusion diffusers folder "
                f"(missing {', '.join(missing)})"
            )


def latent_factors(model_path: str, revision: str | None) -> tuple[int, int]:
    """(VAE down-sampling factor, UNet down-sampling factor) read from the model's configs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    try:
        vae_cfg = AutoencoderKL.load_config(model_path, subfolder="vae", revision=revision)
        unet_cfg = UNet2DConditionModel.load_config(model_path, subfolder="unet", revision=revision)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--pretrained_model_name_or_path {model_path}: cannot read its vae/unet configs ({exc}); give a local "
            f"diffusers folder or a reachable hub id"
        ) from None
    vae_factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    unet_factor = 2 ** (len(unet_cfg["down_block_types"]) - 1)
    return vae_factor, unet_factor


def check_resolution(resolution: int, vae_factor: int, unet_factor: int) -> None:
    needed = vae_factor * unet_factor
    if resolution % needed:
        lo = max(needed, resolution // needed * needed)
        raise ConfigError(
            f"--resolution {resolution} is not divisible by {needed} (VAE factor {vae_factor} x UNet "
            f"down-sampling {unet_factor}); use e.g. {lo} or {lo + needed}"
        )


def check_output_dir(args: argparse.Namespace) -> None:
    """Refuse an output folder that holds a different run (or files that are not a run at all)."""
    out = Path(args.output_dir)
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--output_dir {out}: exists and is not a folder")
    contents = [p for p in out.iterdir() if not p.name.startswith(".")]
    if not contents:
        return
    try:
        previous = read_resolved_config(out)
    except Exception as exc:  # any parse failure means we cannot trust the folder
        raise ConfigError(f"--output_dir {out}: {RESOLVED_CONFIG_NAME} is unreadable ({exc})") from None
    if previous is None:
        mine = {Path(args.class_data_dir).resolve()} if args.class_data_dir else set()
        if all(p.resolve() in mine for p in contents):
            return
        raise ConfigError(
            f"--output_dir {out}: folder is not empty and holds no {RESOLVED_CONFIG_NAME}, so it is not a "
            f"lorabooth run; choose an empty or new --output_dir"
        )
    diff = run_differences(previous, args)
    if diff:
        shown = ", ".join(f"{k} (was {json.dumps(previous.get(k))}, now {json.dumps(getattr(args, k, None))})"
                          for k in diff[:6])
        raise ConfigError(
            f"--output_dir {out} holds a different run: {shown}; use a new --output_dir, or repeat the run "
            f"with --config {out / RESOLVED_CONFIG_NAME}"
        )


def check_inputs(args: argparse.Namespace) -> tuple[list[Path], int]:
    """Run every pre-training check; returns the instance images and the VAE factor."""
    check_model_path(args.pretrained_model_name_or_path)
    images = list_images(args.instance_data_dir, "--instance_data_dir")
    if args.with_prior_preservation and Path(args.class_data_dir).exists():
        list_images(args.class_data_dir, "--class_data_dir", allow_empty=True)
    vae_factor, unet_factor = latent_factors(args.pretrained_model_name_or_path, args.revision)
    check_resolution(args.resolution, vae_factor, unet_factor)
    check_output_dir(args)
    if args.enable_xformers_memory_efficient_attention:
        try:
            import xformers  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--enable_xformers_memory_efficient_attention: xformers is not installed; "
                "`pip install lorabooth[xformers]` (GPU only) or drop the flag to use PyTorch SDPA"
            ) from None
    return images, vae_factor
