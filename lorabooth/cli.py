"""The `lorabooth` command: one entry point that dispatches to sub-commands."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lorabooth", description="Train, mix and preview LoRA adapters.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the installed version")
    args, rest = parser.parse_known_args(argv)
    if args.command == "version":
        from lorabooth import __version__

        print(__version__)
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
