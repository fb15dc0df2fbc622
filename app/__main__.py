"""``python -m lorabooth.app`` / ``lorabooth app``: start the Gradio app (127.0.0.1:7860 by default)."""

from __future__ import annotations

import argparse
import os
import sys


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``user:pass`` -> ``("user", "pass")``; the password may itself contain ':'."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise SystemExit("LORABOOTH_AUTH must look like user:password")
    return user, password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lorabooth app", description="Train, mix and preview LoRA adapters in the browser.")
    parser.add_argument("--host", default=os.environ.get("LORABOOTH_HOST", "127.0.0.1"),
                        help="interface to listen on; 0.0.0.0 exposes the app to your network (use with auth)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("LORABOOTH_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (use with auth)")
    parser.add_argument("--data-dir", default=None,
                        help="where jobs and adapters are kept (default: $LORABOOTH_DATA, /data/lorabooth on a "
                             "Space with persistent storage, else ./data)")
    parser.add_argument("--base-model", default=os.environ.get("LORABOOTH_BASE_MODEL"),
                        help="preselected base model (default: assets/world-model, else SD 1.5 from the Hub)")
    args = parser.parse_args(argv)

    from lorabooth.app.service import Booth
    from lorabooth.app.storage import default_data_dir
    from lorabooth.app.ui import launch

    auth = parse_auth(os.environ.get("LORABOOTH_AUTH"))
    if (args.share or args.host not in ("127.0.0.1", "localhost")) and auth is None:
        print("lorabooth: warning: the app is reachable by others and has no login; set LORABOOTH_AUTH=user:pass",
              file=sys.stderr)
    booth = Booth(args.data_dir or default_data_dir(), base_model=args.base_model)
    print(f"lorabooth: data in {booth.data.root}, base model {booth.base_model}", file=sys.stderr)
    launch(booth, host=args.host, port=args.port, share=args.share, auth=auth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
