"""Generate the class images prior preservation trains on, with the base pipeline.

Batched (``--sample_batch_size``), seeded per image (image ``i`` always comes from seed
``seed + i``, whatever the batch size), resumable (images already in the folder are kept and
counted; a killed run continues where it stopped) and written atomically, so the folder never holds a
half-written PNG.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checks import list_images
from .validation import save_png

CLASS_IMAGE_PATTERN = "class-{index:05d}.png"


def missing_class_images(class_dir: Path, num_class_images: int) -> int:
    existing = list_images(class_dir, "--class_data_dir", allow_empty=True) if class_dir.exists() else []
    return max(0, num_class_images - len(existing))


def _free_indices(class_dir: Path, count: int) -> list[int]:
    """The first ``count`` image numbers whose file does not exist yet."""
    out, i = [], 0
    while len(out) < count:
        if not (class_dir / CLASS_IMAGE_PATTERN.format(index=i)).exists():
            out.append(i)
        i += 1
    return out


def generate_class_images(
    model_path: str,
    class_dir: str | Path,
    class_prompt: str,
    num_class_images: int,
    *,
    resolution: int,
    sample_batch_size: int = 4,
    seed: int = 0,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    num_inference_steps: int = 25,
    show_progress: bool = True,
) -> int:
    """Fill ``class_dir`` up to ``num_class_images`` images; returns how many were generated."""
    from diffusers import StableDiffusionPipeline

    class_dir = Path(class_dir)
    class_dir.mkdir(parents=True, exist_ok=True)
    todo = missing_class_images(class_dir, num_class_images)
    if todo == 0:
        return 0
    pipe = StableDiffusionPipeline.from_pretrained(
        model_path, revision=revision, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    indices = _free_indices(class_dir, todo)
    bar = tqdm(total=todo, desc="Generating class images", disable=not show_progress)
    for start in range(0, todo, sample_batch_size):
        batch = indices[start : start + sample_batch_size]
        generators = [torch.Generator(device="cpu").manual_seed(seed + i) for i in batch]
        images = pipe(
            [class_prompt] * len(batch),
            height=resolution,
            width=resolution,
            num_inference_steps=num_inference_steps,
            generator=generators,
        ).images
        for i, image in zip(batch, images, strict=True):
            save_png(image, class_dir / CLASS_IMAGE_PATTERN.format(index=i))
        bar.update(len(batch))
    bar.close()
    del pipe
    return todo
