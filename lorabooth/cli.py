"""The `lorabooth` command: one entry point that dispatches to each layer's own CLI.

Each sub-command lives in the module that owns the feature and exposes ``main(argv) -> int``;
this file only maps names to modules, so adding a command is one line in ``COMMANDS`` and
heavy imports (torch, diffusers, gradio) happen only for the command actually run.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module exposing main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("lorabooth.trainer.train_dreambooth", "train a DreamBooth (LoRA) adapter; see `lorabooth train --help`"),
    "convert": ("lorabooth.adapters.formats.cli", "convert a LoRA file between peft, diffusers and kohya formats"),
    "inspect": ("lorabooth.adapters.formats.cli", "print format, targets, ranks, alphas and metadata of a LoRA file"),
    "app": ("lorabooth.app.__main__", "start the Gradio app on http://127.0.0.1:7860"),
    "space": ("lorabooth.app.space", "export a Hugging Face Space folder: `lorabooth space export DIR`"),
    "demo": ("lorabooth.demo", "run the end-to-end DreamBooth demo on the shipped world model"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: lorabooth COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += [f"  {'version'.ljust(width)}  print the installed version", "", "Run `lorabooth COMMAND --help` for a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command in {"version", "--version"}:
        from lorabooth import __version__

        print(__version__)
        return 0
    if command not in COMMANDS:
        print(f"lorabooth: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    # Commands that share one module (convert/inspect) receive their own name first.
    shared = sum(1 for mod, _ in COMMANDS.values() if mod == COMMANDS[command][0]) > 1
    result = module.main([command, *rest] if shared else rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
