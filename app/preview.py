"""Preview images from one cached base pipeline, with adapters switched in and out by weight patching.

The base pipeline is loaded once per model. An adapter is applied by adding ``scale * up @ down``
to the weights of the layers it targets; the original weights are kept aside, so switching
adapters or scales restores them first and never reloads the model. Scale 0 leaves the layer
untouched, so a scale-0 image is bit-identical to the base image with the same seed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from lorabooth.app.convert import read_gallery_folder

PART_ATTRS = {"unet": "unet", "text_encoder": "text_encoder", "text_encoder_2": "text_encoder_2"}


@dataclass
class PreviewRequest:
    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    guidance: float = 7.5
    seed: int = 0
    size: int | None = None  # pixels; None -> the model's native size


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class PreviewEngine:
    """Thread-safe image generation with a cached base pipeline and cached adapter deltas."""

    def __init__(self, device: str | None = None, dtype: torch.dtype | None = None) -> None:
        self.device = device or default_device()
        self.dtype = dtype or (torch.float16 if self.device.startswith("cuda") else torch.float32)
        self._lock = threading.Lock()
        self._pipe = None
        self._model: str | None = None
        self._originals: dict[tuple[str, str], torch.Tensor] = {}
        self._deltas: dict[tuple[str, float], dict[tuple[str, str], torch.Tensor]] = {}
        self.loads = 0  # how many times a base pipeline was loaded (tests check switching does not reload)

    # ---- the base model --------------------------------------------------------------------
    def pipeline(self, model: str):
        """The base pipeline for ``model`` (a local folder or a hub id), loaded on first use."""
        model = str(model)
        if self._pipe is None or self._model != model:
            from diffusers import StableDiffusionPipeline

            if not os.path.isdir(model) and "/" not in model:
                raise FileNotFoundError(f"base model {model!r} is neither a local folder nor a hub id (org/name)")
            pipe = StableDiffusionPipeline.from_pretrained(
                model, dtype=self.dtype, safety_checker=None, requires_safety_checker=False
            )
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
            self._pipe, self._model, self._originals = pipe, model, {}
            self.loads += 1
        return self._pipe

    def base_parts(self, model: str) -> dict[str, torch.nn.Module]:
        pipe = self.pipeline(model)
        return {part: getattr(pipe, attr) for part, attr in PART_ATTRS.items() if getattr(pipe, attr, None) is not None}

    def native_size(self, model: str) -> int:
        pipe = self.pipeline(model)
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)

    # ---- adapters --------------------------------------------------------------------------
    def _adapter_deltas(self, folder: Path) -> dict[tuple[str, str], torch.Tensor]:
        key = (str(folder), max((p.stat().st_mtime for p in Path(folder).rglob("*.safetensors")), default=0.0))
        if key not in self._deltas:
            lora = read_gallery_folder(Path(folder))
            self._deltas = {k: v for k, v in self._deltas.items() if k[0] != str(folder)}
            self._deltas[key] = {k: d.to(self.device, torch.float32) for k, d in lora.deltas().items()}
        return self._deltas[key]

    def _apply(self, adapters: list[tuple[Path, float]]) -> None:
        """Set every patched layer to ``original + sum(scale * delta)``; unlisted layers go back to the original."""
        parts = self.base_parts(self._model)
        total: dict[tuple[str, str], torch.Tensor] = {}
        for folder, scale in adapters:
            if scale == 0:
                continue
            for key, delta in self._adapter_deltas(folder).items():
                total[key] = total.get(key, 0) + scale * delta
        with torch.no_grad():
            for key in set(self._originals) | set(total):
                part, path = key
                if part not in parts:
                    raise ValueError(f"adapter adapts {part!r}, which this pipeline does not have")
                weight = parts[part].get_submodule(path).weight
                if key not in self._originals:
                    self._originals[key] = weight.detach().clone()
                original = self._originals[key]
                if key in total:
                    weight.copy_((original.float() + total[key].reshape(original.shape)).to(weight.dtype))
                else:
                    weight.copy_(original)
                    del self._originals[key]

    # ---- images ----------------------------------------------------------------------------
    def generate(self, model: str, req: PreviewRequest, adapters: list[tuple[Path, float]] | None = None):
        """One image for ``req`` with ``adapters`` (folder, scale) applied; the seed fixes the noise."""
        with self._lock:
            pipe = self.pipeline(model)
            self._apply(list(adapters or []))
            size = req.size or self.native_size(model)
            generator = torch.Generator(device="cpu").manual_seed(int(req.seed))
            result = pipe(
                req.prompt,
                negative_prompt=req.negative_prompt or None,
                num_inference_steps=int(req.steps),
                guidance_scale=float(req.guidance),
                height=int(size),
                width=int(size),
                generator=generator,
            )
            return result.images[0]

    def grid(self, model: str, req: PreviewRequest, adapters: list[tuple[str, Path, float]]) -> list[tuple]:
        """Base, each adapter alone, and (with several) all together — same seed, side by side."""
        images = [(self.generate(model, req, []), "base")]
        for name, folder, scale in adapters:
            images.append((self.generate(model, req, [(folder, scale)]), f"{name} @ {scale:g}"))
        if len(adapters) > 1:
            combo = [(folder, scale) for _, folder, scale in adapters]
            label = " + ".join(f"{name}@{scale:g}" for name, _, scale in adapters)
            images.append((self.generate(model, req, combo), label))
        return images
