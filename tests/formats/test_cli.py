"""``lorabooth convert`` / ``lorabooth inspect`` on files from all three ecosystems."""

from __future__ import annotations

import pytest
from lorabooth.adapters.formats import load_lora, save_lora

from lorabooth.cli import main
from tests.formats.conftest import random_lora


@pytest.fixture(scope="module")
def sources(unet, text_encoder, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    lora = random_lora({"unet": unet, "text_encoder": text_encoder}, every=5)
    save_lora(lora, root / "kohya.safetensors", to="kohya", trigger_words=["sks"])
    save_lora(lora, root / "diffusers", to="diffusers")
    save_lora(lora, root / "peft", to="peft")
    return lora, root


@pytest.mark.parametrize("src", ["kohya.safetensors", "diffusers", "peft"])
@pytest.mark.parametrize("to", ["peft", "diffusers", "kohya"])
def test_convert_every_direction(sources, tmp_path, capsys, src, to):
    lora, root = sources
    out = tmp_path / ("out.safetensors" if to == "kohya" else "out")
    assert main(["convert", str(root / src), str(out), "--to", to]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "warning" not in text
    back = load_lora(out)
    for key, mod in lora.modules.items():
        assert back.modules[key].alpha == mod.alpha
        assert (back.modules[key].delta() == mod.delta()).all()


def test_inspect_prints_the_facts(sources, capsys):
    _, root = sources
    assert main(["inspect", str(root / "kohya.safetensors")]) == 0
    text = capsys.readouterr().out
    for needle in ("format:   kohya", "modules:", "unet:", "text_encoder:", "ranks:    [4, 6]", "alphas:",
                   "modelspec.trigger_phrase = sks", "unused:   none", "MiB"):
        assert needle in text, needle


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 4)
    assert main(["inspect", str(tmp_path / "bad.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lorabooth inspect: error:") and "too short" in err
    assert main(["convert", str(tmp_path / "bad.safetensors"), str(tmp_path / "o"), "--to", "peft"]) == 1
    assert not (tmp_path / "o").exists()
