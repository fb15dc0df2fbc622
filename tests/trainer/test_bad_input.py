"""Each bad input is a clear error (exit code 2, message naming the flag/file) before training starts."""

from __future__ import annotations

import shutil

import pytest
from lorabooth.trainer.train_dreambooth import main

from tests.trainer.conftest import base_flags


def _run(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def _nothing_trained(out) -> bool:
    return not out.exists() or not any(out.glob("checkpoint-*")) and not (out / "unet").exists()


def test_empty_instance_folder(tiny_model, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _run(capsys, base_flags(tiny_model, empty, tmp_path / "out", use_lora=True))
    assert "--instance_data_dir" in err and "no images" in err
    assert _nothing_trained(tmp_path / "out")


def test_missing_instance_folder(tiny_model, tmp_path, capsys):
    err = _run(capsys, base_flags(tiny_model, tmp_path / "nope", tmp_path / "out", use_lora=True))
    assert "--instance_data_dir" in err and "does not exist" in err


@pytest.mark.parametrize("name, payload", [("notes.docx", b"PK\x03\x04 not an image"),
                                           ("broken.png", b"\x89PNG\r\n\x1a\n truncated")])
def test_non_image_or_unreadable_file_is_named(tiny_model, instance_dir, tmp_path, capsys, name, payload):
    folder = tmp_path / "images"
    shutil.copytree(instance_dir, folder)
    (folder / name).write_bytes(payload)
    (folder / "captions.txt").write_text("side files like captions are fine")
    err = _run(capsys, base_flags(tiny_model, folder, tmp_path / "out", use_lora=True))
    assert name in err and "not a readable image" in err
    assert _nothing_trained(tmp_path / "out")


def test_prior_preservation_without_class_prompt(tiny_model, instance_dir, tmp_path, capsys):
    err = _run(capsys, base_flags(tiny_model, instance_dir, tmp_path / "out", with_prior_preservation=True,
                                  class_data_dir=tmp_path / "class"))
    assert "--class_prompt" in err


def test_unknown_model_path(instance_dir, tmp_path, capsys):
    err = _run(capsys, base_flags(tmp_path / "no-such-model", instance_dir, tmp_path / "out"))
    assert "--pretrained_model_name_or_path" in err and "no such folder" in err


def test_folder_that_is_not_a_pipeline(instance_dir, tmp_path, capsys):
    err = _run(capsys, base_flags(instance_dir, instance_dir, tmp_path / "out"))
    assert "not a Stable-Diffusion diffusers folder" in err and "unet/" in err


def test_resolution_not_divisible_by_vae_factor(tiny_model, instance_dir, tmp_path, capsys):
    err = _run(capsys, base_flags(tiny_model, instance_dir, tmp_path / "out", resolution=30))
    assert "--resolution 30" in err and "divisible by 4" in err and "VAE factor 2" in err


def test_output_dir_holding_a_different_run(tiny_model, instance_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(base_flags(tiny_model, instance_dir, out, use_lora=True, max_train_steps=1)) == 0
    weights = (out / "unet" / "adapter_model.safetensors").read_bytes()
    err = _run(capsys, base_flags(tiny_model, instance_dir, out, use_lora=True, lora_r=4, max_train_steps=1))
    assert "holds a different run" in err and "lora_r" in err
    assert (out / "unet" / "adapter_model.safetensors").read_bytes() == weights  # nothing a user made is lost


def test_output_dir_with_foreign_files(tiny_model, instance_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.pdf").write_bytes(b"%PDF")
    err = _run(capsys, base_flags(tiny_model, instance_dir, out, use_lora=True))
    assert "not a lorabooth run" in err


def test_xformers_missing_is_explained(tiny_model, instance_dir, tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        import xformers  # noqa: F401
    except ImportError:
        err = _run(capsys, base_flags(tiny_model, instance_dir, tmp_path / "out",
                                      enable_xformers_memory_efficient_attention=True))
        assert "xformers is not installed" in err and "SDPA" in err
    else:
        pytest.skip("xformers is installed here; the missing-xformers message cannot be exercised")
