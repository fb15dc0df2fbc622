"""The real app in headless Chromium, driven like a person would: train, stop, resume, preview, mix, download.

Chromium is Debian's (/usr/bin/chromium, installed by .ci/run); Playwright's Python package drives it.
Screenshots of every tab go to test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = os.environ.get("LORABOOTH_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SLOW = 240_000  # ms: a trainer step on a busy 2-core CPU can take seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model, demo_subject, trained_adapter):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (the CI script .ci/run does this)")
    from lorabooth.app.service import Booth
    from lorabooth.app.ui import launch

    booth = Booth(tmp_path_factory.mktemp("e2e") / "data", base_model=str(tiny_model), demo=demo_subject)
    # an adapter trained by the real trainer, so preview/mix/download do not wait for the browser's run
    booth.gallery.add_from_job({"id": "fixture", "name": "dog", "meta": {"base_model": str(tiny_model),
                                                                          "trigger_words": "a photo of sks dog"}},
                               trained_adapter)
    demo, (_, url, _) = launch(booth, port=_free_port(), block=False, quiet=True)
    yield booth, url
    demo.close()
    booth.close(kill_jobs=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(browser, url):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = ctx.new_page()
    page.goto(url)
    page.wait_for_selector("#start-btn", timeout=60_000)
    return ctx, page


def _shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _progress(page) -> dict:
    el = page.locator("#lb-progress-inner")
    return {k: el.get_attribute(f"data-{k}") for k in ("status", "step", "total")}


def _wait_progress(page, pred, timeout=SLOW / 1000):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = _progress(page)
        except Exception:  # the element is being re-rendered
            last = None
        if last and pred(last):
            return last
        time.sleep(0.25)
    raise AssertionError(f"progress never reached the expected state; last seen {last}")


def _fill(page, elem_id, value, tag="input"):
    box = page.locator(f"#{elem_id} {tag}").first
    box.fill(str(value))
    box.press("Tab")


def _choose(page, elem_id, option):
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).first.click()


def _wait_text(page, elem_id, text, timeout=30_000):
    """Wait until the component's visible text contains ``text`` (tables render cells twice)."""
    page.wait_for_function(
        "([id, t]) => { const e = document.getElementById(id); return e && e.innerText.includes(t); }",
        arg=[elem_id, text], timeout=timeout,
    )


def _tab(page, name):
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(300)


def _image_bytes(page, img) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    src = img.get_attribute("src")
    data = page.request.get(src).body()
    return np.asarray(Image.open(BytesIO(data)).convert("RGB"), dtype=np.int16)


@pytest.mark.timeout(1800)  # trainer start-up twice plus two SIGTERM checkpoints; minutes on a busy CPU
def test_train_progress_refresh_two_sessions_stop_resume(server, browser):
    booth, url = server
    ctx, page = _open(browser, url)
    _shot(page, "tab-train")
    page.locator("#use-demo input").check()
    page.wait_for_function("document.querySelector('#instance-prompt textarea').value.includes('sks')")
    _fill(page, "train-name", "browser-run", "textarea")
    _fill(page, "train-steps", 2000)  # never reached: the run is stopped long before
    _fill(page, "train-res", 32)
    page.get_by_text("Advanced").click()
    _fill(page, "train-ckpt", 1000)
    _fill(page, "train-val", 1000)
    _fill(page, "extra-flags", "--validation_at_start --num_inference_steps 2", "textarea")
    page.locator("#start-btn").click()
    _wait_text(page, "train-msg", "Queued job")

    first = _wait_progress(page, lambda p: p["status"] == "running" and int(p["step"] or 0) >= 1)
    page.wait_for_selector("#val-images img", timeout=SLOW)  # the validation image taken at the start
    moved = _wait_progress(page, lambda p: int(p["step"]) > int(first["step"]))
    assert int(moved["total"]) == 2000
    page.wait_for_function("document.querySelector('#log-tail textarea').value.includes('Steps')", timeout=30_000)
    _shot(page, "tab-train-running")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "readme-train.png"))  # one viewport, for docs/screenshot-app.png

    # a browser refresh mid-training still shows the job
    page.reload()
    page.wait_for_selector("#start-btn", timeout=60_000)
    after = _wait_progress(page, lambda p: p["status"] == "running")
    assert int(after["total"]) == 2000
    job_id = booth.jobs.list()[0]["id"]

    # another browser session sees none of it and cannot stop it
    ctx2, other = _open(browser, url)
    _tab(other, "Jobs")
    _wait_text(other, "queue", "a job of another session")
    assert job_id not in other.locator("#jobs-table").inner_text()
    _fill(other, "job-pick", job_id)
    other.locator("#jobs-stop").click()
    _wait_text(other, "jobs-msg", "another session")
    assert booth.jobs.get(job_id)["status"] == "running"
    ctx2.close()

    _tab(page, "Jobs")
    _wait_text(page, "jobs-table", job_id)
    _shot(page, "tab-jobs")
    _tab(page, "Train")

    # Stop keeps the last checkpoint; Resume continues from it
    page.locator("#stop-btn").click()
    stopped = _wait_progress(page, lambda p: p["status"] == "stopped")
    ckpts = sorted(booth.jobs.output_dir(job_id).glob("checkpoint-*"))
    assert ckpts, "stopping must leave a checkpoint"
    at = int(ckpts[-1].name.split("-")[1])
    assert at >= int(stopped["step"]) - 1
    page.locator("#resume-btn").click()
    _wait_progress(page, lambda p: p["status"] == "running" and int(p["step"] or 0) > at)
    assert "Resum" in booth.jobs.log_tail(job_id, 400)
    page.locator("#stop-btn").click()
    _wait_progress(page, lambda p: p["status"] == "stopped")
    ctx.close()


def test_preview_scale_zero_equals_base(server, browser):
    _, url = server
    ctx, page = _open(browser, url)
    _tab(page, "Preview")
    _fill(page, "preview-steps", 2)
    _choose(page, "preview-adapter-0", "dog")
    _choose(page, "preview-adapter-1", "dog")
    _fill(page, "preview-scale-1", 0)
    page.locator("#preview-btn").click()
    _wait_text(page, "preview-msg", "image(s)", SLOW)
    imgs = page.locator("#preview-out img")
    assert imgs.count() == 4  # base, dog@1, dog@0, both
    base, one, zero = (_image_bytes(page, imgs.nth(i)) for i in range(3))
    assert np.array_equal(base, zero), "scale 0 must be the base image"
    assert np.abs(base - one).max() > 0, "scale 1 must change the image"
    _shot(page, "tab-preview")
    ctx.close()


def test_mix_then_download_and_load_the_file(server, browser, tmp_path, tiny_model):
    from diffusers import StableDiffusionPipeline
    from lorabooth.adapters.formats import load_lora

    booth, url = server
    ctx, page = _open(browser, url)
    _tab(page, "Mix")
    _choose(page, "mix-adapter-0", "dog")
    _choose(page, "mix-adapter-1", "dog")
    _fill(page, "mix-weight-1", 0.5)
    _fill(page, "mix-steps", 2)
    _fill(page, "mix-name", "../mixed", "textarea")  # a hostile name is cleaned, not followed
    page.locator("#mix-btn").click()
    _wait_text(page, "mix-msg", "Saved mix", SLOW)
    assert "mixed" in booth.gallery.names()
    assert not (booth.data.root / "mixed").exists()
    page.wait_for_selector("#mix-out img", timeout=30_000)
    _shot(page, "tab-mix")

    _tab(page, "Gallery")
    _wait_text(page, "gallery-table", "mixed")
    _shot(page, "tab-gallery")
    files = {}
    _choose(page, "gallery-pick", "mixed")
    for fmt, expected in (("diffusers", "pytorch_lora_weights.safetensors"), ("peft", "mixed-peft.zip")):
        page.locator(f"#gallery-fmt label:has-text('{fmt}')").click()
        page.locator("#gallery-dl-btn").click()
        _wait_text(page, "gallery-msg", expected, 60_000)
        link = page.locator(f'#gallery-file a[download="{expected}"]').first
        link.wait_for(timeout=30_000)
        with page.expect_download() as info:
            link.click()
        files[fmt] = tmp_path / info.value.suggested_filename
        info.value.save_as(files[fmt])
    assert files["diffusers"].name == "pytorch_lora_weights.safetensors"
    mixed = load_lora(booth.gallery.path("mixed"))
    downloaded = load_lora(files["diffusers"])
    assert set(downloaded.modules) == set(mixed.modules)
    for key, mod in mixed.modules.items():
        np.testing.assert_allclose(downloaded.modules[key].delta().numpy(), mod.delta().numpy(), rtol=1e-5, atol=1e-6)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model), safety_checker=None)
    pipe.load_lora_weights(str(files["diffusers"]))  # diffusers reads what the app hands out
    assert any("lora" in n for n, _ in pipe.unet.named_parameters())
    import zipfile

    with zipfile.ZipFile(files["peft"]) as zf:
        zf.extractall(tmp_path / "peft")
    assert set(load_lora(tmp_path / "peft" / "mixed").modules) == set(mixed.modules)
    ctx.close()


def test_gallery_rename_cannot_escape(server, browser):
    booth, url = server
    ctx, page = _open(browser, url)
    _tab(page, "Gallery")
    _choose(page, "gallery-pick", "mixed")
    _fill(page, "gallery-newname", "/etc/passwd", "textarea")
    page.locator("#gallery-rename").click()
    _wait_text(page, "gallery-msg", "Renamed to")
    assert "etc_passwd" in booth.gallery.names() and "mixed" not in booth.gallery.names()
    assert (booth.gallery.root / "etc_passwd" / "meta.json").exists()
    ctx.close()


def test_scriptable_api_with_gradio_client(server):
    from gradio_client import Client

    booth, url = server
    client = Client(url, verbose=False)
    job = client.predict("a photo of sks dog", "secret-token", 3, api_name="/train")
    status = client.predict(job["id"], "secret-token", api_name="/job_status")
    assert status["job"]["id"] == job["id"] and status["job"]["owner"] == "api:secret-token"
    with pytest.raises(Exception, match="another session"):
        client.predict(job["id"], "someone-else", api_name="/stop_job")
    stopped = client.predict(job["id"], "secret-token", api_name="/stop_job")
    assert stopped["status"] in ("stopped", "stopping")
    grid = client.predict(str(booth.base_model), "a photo of sks dog", "", 2, 3.0, 0, 0, "dog", 1.0, None, 1.0,
                          None, 1.0, api_name="/preview")
    images, message = grid
    assert len(images) == 2 and "2 image(s)" in message


def test_screenshot_for_readme(server):
    shot = ARTIFACTS / "readme-train.png"
    assert shot.exists()
    if os.environ.get("LORABOOTH_UPDATE_SCREENSHOT"):
        shutil.copy(shot, Path(__file__).resolve().parents[2] / "docs" / "screenshot-app.png")
