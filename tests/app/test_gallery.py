"""Gallery storage, imports, exports and the names users type (no browser)."""

import json
import zipfile

import pytest
import torch
from lorabooth.app.gallery import Gallery, GalleryError
from lorabooth.app.storage import DataDir, UnsafeNameError, inside, safe_name
from lorabooth.app.uploads import UploadError, check_image, check_safetensors, save_images


@pytest.mark.parametrize("raw", ["../../etc/passwd", "/etc/passwd", "a/../../b", "..\\..\\win", "~/x"])
def test_safe_name_never_leaves_the_folder(tmp_path, raw):
    name = safe_name(raw)
    assert "/" not in name and "\\" not in name and ".." not in name
    assert inside(tmp_path, name).parent == tmp_path.resolve()


def test_empty_names_and_escaping_paths_are_errors(tmp_path):
    for raw in ["", "   ", "///", "../.."]:
        with pytest.raises(UnsafeNameError):
            safe_name(raw)
    with pytest.raises(UnsafeNameError):
        inside(tmp_path, "..", "x")
    with pytest.raises(UnsafeNameError):
        inside(tmp_path, "/etc/passwd")


def test_images_are_checked_by_decoding(tmp_path):
    fake = tmp_path / "cat.png"
    fake.write_text("#!/bin/sh\necho not an image\n")
    with pytest.raises(UploadError, match="not a readable image"):
        check_image(fake)
    from PIL import Image

    real = tmp_path / "real.jpg.txt"  # the extension lies the other way: still accepted, it decodes
    Image.new("RGB", (16, 16), (1, 2, 3)).save(real, format="JPEG")
    assert check_image(real).size == (16, 16)
    truncated = tmp_path / "trunc.png"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(UploadError):
        check_image(truncated)
    with pytest.raises(UploadError):  # one bad file refuses the whole batch; nothing is written
        save_images([real, fake], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_only_safetensors_are_accepted(tmp_path):
    pickled = tmp_path / "evil.safetensors"
    torch.save({"w": torch.zeros(2)}, pickled)
    with pytest.raises(UploadError, match="not a .safetensors"):
        check_safetensors(pickled)
    text = tmp_path / "x.safetensors"
    text.write_text("hello world, this is text")
    with pytest.raises(UploadError):
        check_safetensors(text)
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_file({"a": torch.zeros(2, 3)}, str(good))
    assert check_safetensors(good)["a"]["shape"] == [2, 3]
    good.write_bytes(good.read_bytes()[:-4])
    with pytest.raises(UploadError, match="truncated"):
        check_safetensors(good)


@pytest.fixture
def gallery(tmp_path, trained_adapter):
    g = Gallery(DataDir(tmp_path / "data"))
    job = {"id": "job1", "name": "dog", "meta": {"base_model": "tiny", "trigger_words": "sks"}}
    g.add_from_job(job, trained_adapter)
    return g


def test_trained_run_becomes_a_gallery_entry(gallery, trained_adapter):
    meta = gallery.get("dog")
    assert meta["source"] == "trained" and meta["parts"] == ["unet", "text_encoder"]
    unet_cfg = json.loads((trained_adapter / "unet" / "adapter_config.json").read_text())
    assert (meta["r"], meta["lora_alpha"]) == (unet_cfg["r"], unet_cfg["lora_alpha"])
    assert (meta["text_encoder_r"], meta["text_encoder_lora_alpha"]) == (2, 4)
    assert meta["size_bytes"] > 0 and gallery.names() == ["dog"]


def test_rename_and_delete_stay_inside(gallery, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    rec = gallery.rename("dog", "../precious")
    assert rec["name"] == "precious"
    assert (gallery.root / "precious" / "meta.json").exists() and not any(outside.iterdir())
    with pytest.raises(GalleryError):
        gallery.delete("../../precious-not-there")
    gallery.delete("../precious")  # sanitized to the gallery entry, never the folder outside
    assert outside.exists() and gallery.names() == []


def test_exports_load_back(gallery, tiny_model, tmp_path):
    from lorabooth.adapters.formats import load_lora

    original = load_lora(gallery.path("dog"))
    for fmt in ("diffusers", "kohya"):
        path = gallery.export("dog", fmt)
        back = load_lora(path)
        assert set(back.modules) == set(original.modules), fmt
        for key, mod in original.modules.items():
            torch.testing.assert_close(back.modules[key].delta(), mod.delta(), rtol=1e-5, atol=1e-6)
    zipped = gallery.export("dog", "peft")
    with zipfile.ZipFile(zipped) as zf:
        zf.extractall(tmp_path / "unzipped")
    back = load_lora(tmp_path / "unzipped" / "dog")
    assert set(back.modules) == set(original.modules)


def test_import_round_trip_and_base_model_check(gallery, tiny_model, tmp_path):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    parts = {"unet": UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet"),
             "text_encoder": CLIPTextModel.from_pretrained(tiny_model, subfolder="text_encoder")}
    kohya = gallery.export("dog", "kohya")
    rec = gallery.import_file(kohya, "from-kohya", base_parts=parts)
    assert rec["source"] == "imported" and rec["parts"] == ["unet", "text_encoder"]

    wrong = {"unet": UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=8,
                                          norm_num_groups=8, attention_head_dim=2, sample_size=8,
                                          down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                          up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
             "text_encoder": parts["text_encoder"]}
    diffusers_file = gallery.export("dog", "diffusers")
    with pytest.raises(GalleryError, match="do not fit the base layer"):
        gallery.import_file(diffusers_file, "wrong-base", base_parts=wrong)
    assert "wrong-base" not in gallery.names()
    notes = tmp_path / "notes.safetensors"
    notes.write_text("not a model")
    with pytest.raises(GalleryError, match="safetensors"):
        gallery.import_file(notes, "notes")


def test_url_import_refuses_non_http_and_non_safetensors(tmp_path):
    from lorabooth.app.downloads import DownloadError, download

    for url in ("file:///etc/passwd", "ftp://x/y.safetensors", "https://example.com/model.ckpt"):
        with pytest.raises(DownloadError):
            download(url, tmp_path / "x.safetensors")


def test_url_import_streams_with_progress_and_size_limit(tmp_path, trained_adapter):
    import functools
    import http.server
    import threading

    from lorabooth.app.downloads import DownloadError, download

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(trained_adapter))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/pytorch_lora_weights.safetensors"
        seen: list[float] = []
        out = download(url, tmp_path / "a.safetensors", progress=lambda f, _d: seen.append(f))
        assert out.read_bytes() == (trained_adapter / "pytorch_lora_weights.safetensors").read_bytes()
        assert seen and seen[-1] == pytest.approx(1.0)
        with pytest.raises(DownloadError, match="limit"):
            download(url, tmp_path / "b.safetensors", max_bytes=1000)
        assert not (tmp_path / "b.safetensors").exists()
    finally:
        server.shutdown()
