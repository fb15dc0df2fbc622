"""A small CNN that names the shape in a shapes-world image, robust to the softness of model output.

The analytic descriptors in `evaluator` read generator images exactly, but a diffusion model's
decoder rounds corners and melts the points of small stars; measured on images round-tripped
through the world model's VAE, nearest-centroid descriptors then misread about one shape in ten
although a person reads them all. This network is trained (`scripts/train_shape_classifier.py`,
seeded, ~14 minutes on 2 CPU cores) only on generator images with generic damage (blur, down- and
up-sampling, halos, hue drift, blotches, shading, noise); it never sees the VAE, so its accuracy on VAE
round-trips is a held-out measurement, not a fitted one.

    >>> from lorabooth.world.shape_classifier import classify_shapes
    >>> classify_shapes([image])   # -> ["star"]
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .generator import IMAGE_SIZE, SHAPES

WEIGHTS_PATH = Path(__file__).with_name("shape_classifier.safetensors")


class ShapeNet(nn.Module):
    """Three stride-2 stages, then global average and max pooling (position-free) and a linear head."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        for cin, cout in [(3, w), (w, w), (w, 2 * w), (2 * w, 2 * w)]:
            stride = 1 if cin == 3 else 2
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.SiLU()]
        layers += [nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(4 * w, 2 * w), nn.SiLU(), nn.Linear(2 * w, len(SHAPES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, 64, 64) in [-1, 1]; returns logits over `SHAPES`."""
        f = self.features(x)
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))


def to_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    """HxWx3 float arrays in [0, 255] (already 64x64) -> (N, 3, 64, 64) in [-1, 1]."""
    x = torch.from_numpy(np.stack(arrays).astype(np.float32)).permute(0, 3, 1, 2)
    return x / 127.5 - 1.0


def degrade(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Model-like damage to a batch in [-1, 1]: each image gets its own random mix of blur,
    down/up-sampling, halos, hue drift, colour blotches, a shading gradient and pixel noise."""
    n = x.shape[0]

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=gen)

    # Gaussian blur, sigma 0..1.6 per image (separable, 7 taps).
    sigma = u(0.05, 1.6)
    taps = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)
    flat = x.reshape(1, n * 3, IMAGE_SIZE, IMAGE_SIZE)
    kk = k.repeat_interleave(3, 0)
    flat = F.conv2d(F.pad(flat, (3, 3, 0, 0), mode="replicate"), kk[:, None, None, :], groups=n * 3)
    flat = F.conv2d(F.pad(flat, (0, 0, 3, 3), mode="replicate"), kk[:, None, :, None], groups=n * 3)
    x = flat.reshape(n, 3, IMAGE_SIZE, IMAGE_SIZE)
    # A third of the images lose detail the way a 4x-downsampling latent does.
    small = F.interpolate(x, scale_factor=0.5 if torch.rand(1, generator=gen) < 0.5 else 0.25, mode="area")
    resampled = F.interpolate(small, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
    pick = (torch.rand(n, generator=gen) < 0.33).float()[:, None, None, None]
    x = pick * resampled + (1 - pick) * x
    # Halos: decoders over-sharpen edges (unsharp masking with a random strength).
    soft = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = x + u(0, 0.8, 1, 1, 1) * (x - soft)
    # Colour: a random near-identity channel mix (hue drift), contrast and offset.
    mix = torch.eye(3) + u(-0.12, 0.12, 3, 3)
    x = torch.einsum("nij,njhw->nihw", mix, x) * u(0.85, 1.1, 1, 1, 1) + u(-0.08, 0.08, 3, 1, 1)
    # Blotches: low-frequency colour noise, like a model's uneven fills and backgrounds.
    blotch = F.interpolate(torch.randn(n, 3, 6, 6, generator=gen), size=IMAGE_SIZE, mode="bicubic", align_corners=False)
    x = x + u(0, 0.12, 1, 1, 1) * blotch
    # A linear shading ramp in a random direction, then pixel noise.
    angle = u(0, 2 * math.pi)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, IMAGE_SIZE), torch.linspace(-1, 1, IMAGE_SIZE), indexing="ij")
    ramp = torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy
    x = x + (u(0, 0.12)[:, None, None] * ramp)[:, None]
    x = x + u(0, 0.05, 1, 1, 1) * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1)


@lru_cache(maxsize=1)
def load_classifier(path: str | None = None) -> ShapeNet:
    """The shipped network (weights next to this module), in eval mode."""
    from safetensors.torch import load_file

    weights = Path(path) if path else WEIGHTS_PATH
    if not weights.is_file():
        raise FileNotFoundError(
            f"shape classifier weights not found at {weights}; rebuild them with "
            "`python scripts/train_shape_classifier.py`"
        )
    net = ShapeNet()
    net.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    return net.eval()


def shape_probabilities(arrays: list[np.ndarray]) -> np.ndarray:
    """(N, len(SHAPES)) probabilities for 64x64 HxWx3 arrays in [0, 255]."""
    with torch.inference_mode():
        return torch.softmax(load_classifier()(to_tensor(arrays)), 1).numpy()


def classify_shapes(arrays: list[np.ndarray]) -> list[str]:
    """The most likely shape name for each 64x64 HxWx3 array in [0, 255]."""
    return [SHAPES[i] for i in shape_probabilities(arrays).argmax(1)]
