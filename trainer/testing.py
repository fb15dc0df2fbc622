"""Build a tiny Stable-Diffusion-compatible pipeline from configs, for tests and demos offline.

No model hub is reachable here, so tests create a few-hundred-kilobyte pipeline with random weights
and the same folder layout as a real one (unet/ vae/ text_encoder/ tokenizer/ scheduler/).
The app's tests can reuse it:

    >>> from lorabooth.trainer.testing import build_tiny_pipeline
    >>> path = build_tiny_pipeline(tmp_path / "tiny-sd")      # then from_pretrained(path) works
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lorabooth.world.tokenizer import bytes_to_unicode

# Words the tests' prompts use; each becomes a single token through a chain of merges.
TINY_WORDS = ("a", "photo", "of", "sks", "dog", "cat", "red", "blue", "on", "the", "beach")


def _byte_symbols() -> list[str]:
    """CLIP's reversible byte -> printable character table, in byte order (shared with the world's tokenizer)."""
    table = bytes_to_unicode()
    return [table[b] for b in range(256)]


def write_tiny_tokenizer(directory: Path) -> None:
    """A byte-level BPE CLIPTokenizer: every byte symbol (with and without ``</w>``) plus merges."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    for s in _byte_symbols():
        vocab.setdefault(s, len(vocab))
    for s in _byte_symbols():
        vocab.setdefault(s + "</w>", len(vocab))
    merges: list[str] = []
    for word in TINY_WORDS:
        left, parts = word[0], list(word[1:-1]) + [word[-1] + "</w>"]
        if len(word) == 1:
            continue
        for right in parts:
            if f"{left} {right}" not in merges:
                merges.append(f"{left} {right}")
            left += right
            vocab.setdefault(left, len(vocab))
    vocab.setdefault("<|startoftext|>", len(vocab))
    vocab.setdefault("<|endoftext|>", len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=77)
    tok.save_pretrained(str(directory))


def build_tiny_pipeline(
    directory: str | Path,
    *,
    sample_size: int = 32,
    vae_factor: int = 2,
    prediction_type: str = "epsilon",
    seed: int = 0,
) -> Path:
    """Write a tiny random-weight StableDiffusionPipeline folder and return its path.

    ``sample_size`` is the image size in pixels; ``vae_factor`` the VAE's down-sampling (2 or 4).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    directory = Path(directory)
    write_tiny_tokenizer(directory / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(directory / "tokenizer"))
    torch.manual_seed(seed)
    vae_levels = {2: 2, 4: 3}[vae_factor]
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * vae_levels,
        up_block_types=("UpDecoderBlock2D",) * vae_levels,
        block_out_channels=(8, 16, 16)[:vae_levels],
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=sample_size,
    )
    unet = UNet2DConditionModel(
        sample_size=sample_size // vae_factor,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        steps_offset=1,
        clip_sample=False,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(directory))
    return directory


def write_instance_images(directory: str | Path, count: int = 3, size: int = 32, seed: int = 0) -> Path:
    """A folder of small coloured-square PNGs: a subject the tiny model can bind to a token."""
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    for i in range(count):
        img = torch.zeros(size, size, 3, dtype=torch.uint8)
        img[...] = torch.tensor([30, 30, 200], dtype=torch.uint8)
        lo = int(torch.randint(0, size // 4, (1,), generator=gen))
        img[lo : lo + size // 2, lo : lo + size // 2] = torch.tensor([220, 40, 40], dtype=torch.uint8)
        Image.fromarray(img.numpy()).save(directory / f"instance_{i}.png")
    return directory
