import json
import shutil
from pathlib import Path

import pytest
from lorabooth.world.checks import (
    InstanceImagesError,
    ModelFolderError,
    check_model_folder,
    load_instance_images,
)
from PIL import Image

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def _fake_model_folder(root: Path) -> Path:
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"]}
    (root / "model_index.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "model_index.json").write_text(json.dumps(index))
    for comp, files in {"unet": ["config.json", "diffusion_pytorch_model.safetensors"],
                        "vae": ["config.json", "diffusion_pytorch_model.safetensors"],
                        "text_encoder": ["config.json", "model.safetensors"],
                        "tokenizer": ["vocab.json", "merges.txt", "tokenizer_config.json"], "scheduler": ["scheduler_config.json"]}.items():
        (root / comp).mkdir(exist_ok=True)
        for f in files:
            (root / comp / f).write_text("{}")
    return root


def test_complete_folder_passes(tmp_path):
    assert check_model_folder(_fake_model_folder(tmp_path / "m")) == tmp_path / "m"


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(ModelFolderError, match=str(tmp_path / "nope")):
        check_model_folder(tmp_path / "nope")


def test_partial_folder_names_the_missing_file(tmp_path):
    root = _fake_model_folder(tmp_path / "m")
    (root / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=r"unet/diffusion_pytorch_model\.safetensors is missing"):
        check_model_folder(root)
    shutil.rmtree(root / "tokenizer")
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_text("{}")
    with pytest.raises(ModelFolderError, match=r"tokenizer/tokenizer_config\.json is missing"):
        check_model_folder(root)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}), "no _class_name"),
    (json.dumps({"_class_name": "FluxPipeline"}), "not a StableDiffusionPipeline"),
    (json.dumps({"_class_name": "StableDiffusionPipeline", "unet": None}), "no valid entry for 'unet'"),
])
def test_wrong_model_index_is_named(tmp_path, content, message):
    root = _fake_model_folder(tmp_path / "m")
    (root / "model_index.json").write_text(content)
    with pytest.raises(ModelFolderError, match=message) as e:
        check_model_folder(root)
    assert "model_index.json" in str(e.value)


def test_shipped_model_folder_is_complete():
    check_model_folder(ASSETS / "world-model")


def test_instance_folder_loads_and_rejects_non_images(tmp_path):
    images = load_instance_images(ASSETS / "demo-subject")
    assert 4 <= len(images) <= 6 and all(im.mode == "RGB" and im.size == (64, 64) for im in images)
    folder = tmp_path / "inst"
    folder.mkdir()
    Image.new("RGB", (64, 64), "red").save(folder / "a.png")
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(InstanceImagesError, match=r"notes\.txt is not an image"):
        load_instance_images(folder)
    (folder / "notes.txt").unlink()
    (folder / "b.png").write_bytes(b"this is not a png")
    with pytest.raises(InstanceImagesError, match=r"b\.png could not be read"):
        load_instance_images(folder)
    with pytest.raises(InstanceImagesError, match="does not exist"):
        load_instance_images(tmp_path / "missing")
