"""Screenshots of the app on the shipped world model, for README (docs/screenshot-*.png).

Starts the real app on a throw-away data folder with `assets/world-model`, imports the adapter that
`make demo` wrote (its diffusers file, checked against the base like any import), then drives headless
Chromium: the Preview tab comparing base vs adapter on the subject prompt, and the Train tab.

    make demo && .venv/bin/python scripts/screenshot_app.py            # writes docs/screenshot-*.png
"""

from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter", default=str(REPO / "outputs" / "demo" / "adapter" / "pytorch_lora_weights.safetensors"),
                   help="LoRA file shown in the Preview tab (default: what `make demo` wrote)")
    p.add_argument("--out", default=str(REPO / "docs"), help="folder for screenshot-app.png / screenshot-preview.png")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    args = p.parse_args(argv)
    adapter = Path(args.adapter)
    if not adapter.is_file():
        raise SystemExit(f"--adapter {adapter}: no such file; run `make demo` first or pass a LoRA file")

    from lorabooth.app.service import Booth
    from lorabooth.app.ui import launch
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lorabooth-shots.") as tmp:
        booth = Booth(Path(tmp) / "data", start_jobs=False)
        booth.import_adapter(adapter, "demo-star")
        demo, (_, url, _) = launch(booth, port=_free_port(), block=False, quiet=True)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(url)
                page.wait_for_selector("#start-btn", timeout=60_000)
                page.locator("#use-demo input").check()
                page.wait_for_timeout(1000)
                page.screenshot(path=str(out / "screenshot-app.png"))

                page.get_by_role("tab", name="Preview").click()
                page.locator("#preview-adapter-0 input").first.click()
                page.get_by_role("option", name="demo-star", exact=True).first.click()
                page.locator("#preview-btn").click()
                page.wait_for_function(
                    "() => (document.getElementById('preview-msg')?.innerText || '').includes('image(s)')",
                    timeout=300_000)
                page.wait_for_timeout(1000)
                page.screenshot(path=str(out / "screenshot-preview.png"))
                browser.close()
        finally:
            demo.close()
            booth.close(kill_jobs=True)
    print(f"wrote {out / 'screenshot-app.png'} and {out / 'screenshot-preview.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
