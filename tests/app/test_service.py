"""The Booth service: the Train form's flags, refused inputs, and a real run landing in the gallery."""

import time

import pytest
from lorabooth.app.service import PRESETS, Booth, BoothError, parse_extra_flags
from lorabooth.app.uploads import UploadError


@pytest.fixture
def booth(tmp_path, tiny_model, demo_subject):
    b = Booth(tmp_path / "data", base_model=str(tiny_model), demo=demo_subject, start_jobs=False)
    yield b
    b.close(kill_jobs=True)


def test_form_becomes_trainer_flags(booth):
    params = booth.train_params({"instance_prompt": "a photo of sks dog", "lora_r": 8.0, "learning_rate": 1e-4,
                                 "train_text_encoder": True, "with_prior_preservation": False,
                                 "extra_flags": "--snr_gamma 5 --center_crop", **PRESETS["T4 16 GB"]})
    assert params["use_lora"] is True and params["lora_r"] == 8 and isinstance(params["lora_r"], int)
    assert params["learning_rate"] == 1e-4 and params["train_text_encoder"] is True
    assert params["gradient_checkpointing"] and params["use_8bit_adam"] and params["mixed_precision"] == "fp16"
    assert params["snr_gamma"] == "5" and params["center_crop"] is True
    assert params["validation_prompt"] == "a photo of sks dog"


def test_the_trainer_accepts_every_flag_the_app_sends(booth):
    from lorabooth.app.jobs import flags_to_argv
    from lorabooth.trainer.args import parse_args

    for preset in PRESETS.values():
        params = booth.train_params({"instance_prompt": "a photo of sks dog", "class_prompt": "a photo of dog",
                                     "with_prior_preservation": True, "train_text_encoder": True, **preset})
        params.update(instance_data_dir="x", class_data_dir="y")
        args = parse_args([*flags_to_argv(params), "--output_dir", "out"])
        assert args.max_train_steps == preset["max_train_steps"] and args.use_lora


@pytest.mark.parametrize("flags", ["--output_dir /etc", "--class_data_dir=/tmp/x", "--config evil.toml", "oops"])
def test_extra_flags_cannot_redirect_files(flags):
    with pytest.raises(BoothError):
        parse_extra_flags(flags)


def test_refused_inputs(booth, tmp_path):
    with pytest.raises(BoothError, match="instance prompt"):
        booth.start_training("me", {"instance_prompt": " "}, use_demo=True)
    with pytest.raises(BoothError, match="class prompt"):
        booth.start_training("me", {"instance_prompt": "a sks", "with_prior_preservation": True}, use_demo=True)
    with pytest.raises(BoothError, match="no instance images"):
        booth.start_training("me", {"instance_prompt": "a sks"}, images=[])
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"%PDF-1.4 not an image")
    with pytest.raises(UploadError, match="photo.png"):
        booth.start_training("me", {"instance_prompt": "a sks"}, images=[str(fake)])
    assert booth.jobs.list() == []


@pytest.mark.slow
def test_real_training_run_lands_in_the_gallery(tmp_path, tiny_model, demo_subject, tiny_train):
    booth = Booth(tmp_path / "data", base_model=str(tiny_model), demo=demo_subject)
    try:
        form = {**tiny_train, "max_train_steps": 2, "validation_steps": 2, "name": "../../run"}
        job = booth.start_training("me", form, use_demo=True)
        deadline = time.time() + 300
        while booth.jobs.get(job["id"])["status"] in ("queued", "running") and time.time() < deadline:
            time.sleep(0.5)
        rec = booth.jobs.get(job["id"])
        assert rec["status"] == "done", booth.jobs.log_tail(job["id"], 30)
        assert rec["adapter"] == "run" and booth.gallery.names() == ["run"]
        meta = booth.gallery.get("run")
        assert meta["trigger_words"] == "a photo of sks dog" and meta["base_model"] == str(tiny_model)
        assert booth.gallery.thumbnail("run") is not None, "the last validation image becomes the thumbnail"
        assert booth.jobs.progress(job["id"]).step == 2
    finally:
        booth.close(kill_jobs=True)
