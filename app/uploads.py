"""Checks on what users hand the app: images decoded (not trusted by extension), safetensors parsed.

Every upload is read from Gradio's temporary file, checked, and re-written by us into the data
folder, so nothing a user sent is ever served back byte-for-byte.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGES = 64
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_ADAPTER_BYTES = 2 * 1024**3


class UploadError(ValueError):
    """An upload the app refuses, with the file's name and the reason."""


def check_image(path: str | Path):
    """Decode ``path`` fully and return an RGB ``PIL.Image``; anything that is not an image is refused."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise UploadError(f"{path.name}: larger than {MAX_IMAGE_BYTES // 2**20} MiB; upload a smaller image")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise UploadError(f"{path.name}: {img.width}x{img.height} is too large (limit 4096x4096)")
            img.load()  # decode every pixel: a truncated or fake file fails here, not later in training
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, UploadError):
            raise
        raise UploadError(f"{path.name}: not a readable image ({exc.__class__.__name__}); upload PNG, JPEG or WebP") from exc


def save_images(paths: list[str | Path], dest: Path) -> list[Path]:
    """Check every image and re-encode it as PNG into ``dest``; nothing is written if one is bad."""
    if not paths:
        raise UploadError("no images: upload a few photos of your subject or use the demo subject")
    if len(paths) > MAX_IMAGES:
        raise UploadError(f"{len(paths)} images is more than the limit of {MAX_IMAGES}")
    images = [check_image(p) for p in paths]
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, img in enumerate(images):
        target = dest / f"instance_{i:03d}.png"
        img.save(target, format="PNG")
        out.append(target)
    return out


def check_safetensors(path: str | Path, max_bytes: int = MAX_ADAPTER_BYTES) -> dict:
    """Parse a safetensors header without loading tensors; return ``{key: {"dtype", "shape"}}``.

    Pickles, zips and anything else are refused by content: the file must start with the
    8-byte header length and a JSON header whose offsets fit the file.
    """
    path = Path(path)
    size = path.stat().st_size
    name = path.name
    if size > max_bytes:
        raise UploadError(f"{name}: {size / 2**20:.0f} MiB is over the {max_bytes // 2**20} MiB limit")
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UploadError(f"{name}: too short to be a .safetensors file; only safetensors adapters are accepted")
        (n,) = struct.unpack("<Q", head)
        if n <= 1 or n > min(size - 8, 100 * 2**20):
            raise UploadError(f"{name}: not a .safetensors file (bad header length); only safetensors adapters are accepted")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UploadError(f"{name}: not a .safetensors file (header is not JSON)") from exc
    if not isinstance(header, dict):
        raise UploadError(f"{name}: not a .safetensors file (header is not a JSON object)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = 0
    for key, info in tensors.items():
        if not (isinstance(info, dict) and {"dtype", "shape", "data_offsets"} <= info.keys()):
            raise UploadError(f"{name}: entry {key!r} is not a tensor description")
        end = max(end, int(info["data_offsets"][1]))
    if 8 + n + end > size:
        raise UploadError(f"{name}: truncated (tensors need {8 + n + end} bytes, file has {size})")
    if not tensors:
        raise UploadError(f"{name}: contains no tensors")
    return tensors
