"""Input checks shared by the world model's users (trainer, demo, app): clear errors that name the path.

    >>> from lorabooth.world.checks import check_model_folder, load_instance_images
    >>> check_model_folder("assets/world-model")        # raises ModelFolderError naming what is wrong
    >>> images = load_instance_images("assets/demo-subject")   # list of RGB PIL images
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# What StableDiffusionPipeline.from_pretrained needs from a local folder.
REQUIRED_COMPONENTS: dict[str, tuple[str, ...]] = {
    "unet": ("config.json", "diffusion_pytorch_model.safetensors"),
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "text_encoder": ("config.json", "model.safetensors"),
    "tokenizer": ("tokenizer_config.json",),
    "scheduler": ("scheduler_config.json",),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SKIPPED_FILES = ("subject.json", "README.md", ".DS_Store")


class ModelFolderError(ValueError):
    """A model folder that StableDiffusionPipeline could not load."""


class InstanceImagesError(ValueError):
    """An instance-image folder that DreamBooth cannot train on."""


def check_model_folder(path: str | Path) -> Path:
    """Check that `path` is a complete StableDiffusionPipeline folder; return it as a Path.

    Raises ModelFolderError naming the missing or broken file and what would fix it.
    """
    root = Path(path)
    fix = "re-export it with scripts/train_world_model.py --export_only, or point at a complete diffusers folder"
    if not root.is_dir():
        raise ModelFolderError(f"model folder {root} does not exist (or is not a folder); {fix}")
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise ModelFolderError(f"{index_path} is missing, so {root} is not a diffusers pipeline folder; {fix}")
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{index_path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(index, dict) or "_class_name" not in index:
        raise ModelFolderError(f"{index_path} has no _class_name; expected a StableDiffusionPipeline index; {fix}")
    if "StableDiffusion" not in str(index["_class_name"]):
        raise ModelFolderError(f"{index_path} describes a {index['_class_name']}, not a StableDiffusionPipeline; {fix}")
    for component, files in REQUIRED_COMPONENTS.items():
        entry = index.get(component)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
            raise ModelFolderError(f"{index_path} has no valid entry for {component!r} (got {entry!r}); {fix}")
        for name in files:
            f = root / component / name
            if not f.is_file():
                raise ModelFolderError(f"{f} is missing: the {component} of {root} is incomplete; {fix}")
    tok = root / "tokenizer"
    if not ((tok / "tokenizer.json").is_file() or ((tok / "vocab.json").is_file() and (tok / "merges.txt").is_file())):
        raise ModelFolderError(f"{tok} has neither tokenizer.json nor vocab.json + merges.txt; {fix}")
    return root


def load_instance_images(folder: str | Path, min_images: int = 1) -> list[Image.Image]:
    """Load every image of an instance folder as RGB, in name order.

    `subject.json` and README files are skipped; any other file that is not a readable image raises
    InstanceImagesError naming it, rather than being silently ignored.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InstanceImagesError(f"instance image folder {root} does not exist (or is not a folder)")
    images = []
    for f in sorted(p for p in root.iterdir() if p.is_file()):
        if f.name in SKIPPED_FILES or f.name.startswith("."):
            continue
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            raise InstanceImagesError(f"{f} is not an image (expected one of {', '.join(IMAGE_SUFFIXES)}); "
                                      f"move it out of the instance folder {root}")
        try:
            with Image.open(f) as im:
                images.append(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise InstanceImagesError(f"{f} could not be read as an image ({e}); replace or remove it") from None
    if len(images) < min_images:
        raise InstanceImagesError(f"instance image folder {root} holds {len(images)} images; at least {min_images} "
                                  f"needed")
    return images
