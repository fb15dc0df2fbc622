"""Training images, prompts and an exactly restorable batch order.

The order of samples is a pure function of (seed, epoch, process rank): resuming at optimiser
step ``k`` just skips ``k * gradient_accumulation_steps`` batches of the current epoch, so a resumed
run sees the very same batches as an uninterrupted one. Random crops are seeded the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps


def load_image(path: Path, resolution: int, *, center_crop: bool, crop_seed: int) -> torch.Tensor:
    """RGB image -> float tensor (3, res, res) in [-1, 1]: resize the short side, then crop."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        w, h = img.size
        scale = resolution / min(w, h)
        new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if center_crop:
        left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    else:
        gen = torch.Generator().manual_seed(crop_seed)
        left = int(torch.randint(0, new_w - resolution + 1, (1,), generator=gen))
        top = int(torch.randint(0, new_h - resolution + 1, (1,), generator=gen))
    img = img.crop((left, top, left + resolution, top + resolution))
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return arr / 127.5 - 1.0


def tokenize(tokenizer, prompt: str) -> torch.Tensor:
    """Token ids padded to the tokenizer's max length, shape (1, L)."""
    return tokenizer(
        prompt, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids


class DreamBoothData:
    """Instance images (and class images for prior preservation), addressed by sample index.

    Sample ``i`` pairs instance image ``i % n_instance`` with class image ``i % n_class``, as the
    diffusers example does; an epoch has ``max(n_instance, n_class)`` samples with prior
    preservation, else ``n_instance``.
    """

    def __init__(
        self,
        instance_images: Sequence[Path],
        class_images: Sequence[Path] | None,
        resolution: int,
        center_crop: bool,
        seed: int,
    ) -> None:
        self.instance_images = list(instance_images)
        self.class_images = list(class_images) if class_images else []
        self.resolution = resolution
        self.center_crop = center_crop
        self.seed = seed
        self._cache: dict[tuple[Path, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return max(len(self.instance_images), len(self.class_images))

    def crop_seed(self, path_index: int, epoch: int, is_class: bool) -> int:
        # A distinct, stable seed per (image, epoch); unused with centre crops.
        return (self.seed * 1_000_003 + epoch * 10_007 + path_index * 2 + int(is_class)) % (2**63)

    def pixels(self, path: Path, index: int, epoch: int, is_class: bool) -> torch.Tensor:
        if self.center_crop:
            key = (path, -1)
            if key not in self._cache:  # centre crops never change: decode each file once
                self._cache[key] = load_image(path, self.resolution, center_crop=True, crop_seed=0)
            return self._cache[key]
        return load_image(path, self.resolution, center_crop=False, crop_seed=self.crop_seed(index, epoch, is_class))

    def sample(self, i: int, epoch: int) -> dict[str, torch.Tensor | int]:
        k = i % len(self.instance_images)
        out: dict[str, torch.Tensor | int] = {
            "instance_pixels": self.pixels(self.instance_images[k], k, epoch, False), "instance_index": k}
        if self.class_images:
            c = i % len(self.class_images)
            out["class_pixels"] = self.pixels(self.class_images[c], c, epoch, True)
            out["class_index"] = c
        return out


class BatchOrder:
    """Which sample indices process ``rank`` trains on, batch by batch, epoch by epoch."""

    def __init__(self, num_samples: int, batch_size: int, num_processes: int, rank: int, seed: int) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.rank = rank
        self.seed = seed

    @property
    def batches_per_epoch(self) -> int:
        return max(1, math.ceil(self.num_samples / (self.batch_size * self.num_processes)))

    def permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        return torch.randperm(self.num_samples, generator=gen)

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[list[int]]:
        """Batches of sample indices for this process, from batch ``start`` of ``epoch``.

        Positions past the end wrap around, so every process gets full batches of equal size.
        """
        perm = self.permutation(epoch).tolist()
        global_batch = self.batch_size * self.num_processes
        for b in range(start, self.batches_per_epoch):
            first = b * global_batch + self.rank * self.batch_size
            yield [perm[(first + j) % self.num_samples] for j in range(self.batch_size)]


def collate(samples: list[dict], with_prior: bool) -> dict[str, torch.Tensor]:
    """Instance pixels first, then class pixels: the loss splits the batch in two halves."""
    pixels = [s["instance_pixels"] for s in samples]
    is_prior = [False] * len(samples)
    if with_prior:
        pixels += [s["class_pixels"] for s in samples]
        is_prior += [True] * len(samples)
    return {"pixel_values": torch.stack(pixels), "is_prior": torch.tensor(is_prior)}


class MicroBatches(torch.utils.data.Dataset):
    """Micro-batches ``start .. end-1`` of the run as a map-style dataset (for DataLoader workers).

    Micro-batch ``m`` is batch ``m % batches_per_epoch`` of epoch ``m // batches_per_epoch``.
    """

    def __init__(self, data: DreamBoothData, order: BatchOrder, with_prior: bool, start: int, end: int) -> None:
        self.data, self.order, self.with_prior = data, order, with_prior
        self.start, self.end = start, end

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        epoch, b = divmod(self.start + j, self.order.batches_per_epoch)
        indices = next(self.order.epoch_batches(epoch, start=b))
        samples = [self.data.sample(i, epoch) for i in indices]
        batch = collate(samples, self.with_prior)
        batch["instance_index"] = torch.tensor([s["instance_index"] for s in samples])
        if self.with_prior:
            batch["class_index"] = torch.tensor([s["class_index"] for s in samples])
        return batch
