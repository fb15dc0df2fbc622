"""The Spaces bundle: valid front matter, requirements, and an entry point that boots on its own."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from lorabooth.app.__main__ import parse_auth
from lorabooth.app.space import export, main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_auth_parsing():
    assert parse_auth("user:pa:ss") == ("user", "pa:ss")
    assert parse_auth("") is None
    with pytest.raises(SystemExit):
        parse_auth("nopassword")


def test_export_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        main(["export", str(tmp_path)])
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_exported_space_boots_its_entry_point(tmp_path, tiny_model, demo_subject):
    import gradio

    space = export(tmp_path / "space", world_model=tiny_model, demo_subject=Path(demo_subject["images_dir"]).parent)
    text = (space / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["sdk"] == "gradio" and front["sdk_version"] == gradio.__version__
    assert front["app_file"] == "app.py" and (space / front["app_file"]).exists()
    assert front["suggested_hardware"] == "t4-small"
    reqs = (space / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("gradio") for r in reqs) and any(r.startswith("diffusers") for r in reqs)
    assert not any(r.startswith("peft") for r in reqs), "peft is a test oracle, never a runtime dependency"
    assert (space / "assets" / "world-model" / "model_index.json").exists()
    assert (space / "src" / "lorabooth" / "adapters" / "__init__.py").exists()

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("LORABOOTH_DATA", "LORABOOTH_BASE_MODEL")}
    env.update(LORABOOTH_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    # run from the bundle itself: the checkout's editable install must not be what gets imported
    proc = subprocess.Popen([sys.executable, "-P", "app.py"], cwd=space, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        body = ""
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(1)
        assert proc.poll() is None, proc.stdout.read()
        assert "lorabooth" in body and str(space / "assets" / "world-model") in body
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    first = out.splitlines()[0] if out else ""
    assert str(space / "src" / "lorabooth") in out, first
    assert (space / "data" / "jobs").is_dir(), "without /data the app keeps its data next to app.py"
