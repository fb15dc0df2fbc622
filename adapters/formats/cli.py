"""``lorabooth convert IN OUT --to {peft,diffusers,kohya}`` and ``lorabooth inspect FILE``."""

from __future__ import annotations

import argparse
import sys

from . import FORMATS, FormatError, convert, describe, load_lora


def _convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorabooth convert",
                                description="Convert a LoRA between PEFT, diffusers and kohya/A1111/ComfyUI formats.")
    p.add_argument("src", help="LoRA file or PEFT folder (format auto-detected)")
    p.add_argument("dst", help="output: a folder for peft, a folder or .safetensors for diffusers, "
                               ".safetensors for kohya")
    p.add_argument("--to", required=True, choices=FORMATS, help="target format")
    p.add_argument("--adapter-name", help="named sub-adapter of a PEFT folder to read")
    p.add_argument("--base-model", help="base model id/path recorded in the output metadata")
    p.add_argument("--trigger", action="append", default=[], help="trigger word for kohya metadata (repeatable)")
    p.add_argument("--fold-alpha", action="store_true",
                   help="diffusers only: multiply alpha/r into lora_B instead of recording it in the header")
    return p


def _inspect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorabooth inspect",
                                description="Print format, base model, targets, ranks, alphas, size and metadata.")
    p.add_argument("path", help="LoRA file or PEFT folder")
    p.add_argument("--adapter-name", help="named sub-adapter of a PEFT folder")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv and argv[0] in {"convert", "inspect"} else ("inspect", argv)
    try:
        if command == "inspect":
            args = _inspect_parser().parse_args(rest)
            print(describe(load_lora(args.path, adapter_name=args.adapter_name)))
            return 0
        args = _convert_parser().parse_args(rest)
        options = {"adapter_name": args.adapter_name, "base_model": args.base_model}
        if args.to == "kohya":
            options["trigger_words"] = args.trigger or None
        if args.to == "diffusers":
            options["fold_alpha"] = args.fold_alpha
        lora, written = convert(args.src, args.dst, args.to, **options)
    except FormatError as exc:
        print(f"lorabooth {command}: error: {exc}", file=sys.stderr)
        return 1
    rank, alpha = lora.common_rank_alpha()
    print(f"read {lora.format} ({len(lora.modules)} modules, parts {lora.parts()}, r={rank}, alpha={alpha:g})")
    for note in lora.notes:
        print(f"note: {note}")
    if lora.unused_keys:
        print(f"warning: {len(lora.unused_keys)} keys were not converted: {', '.join(lora.unused_keys[:10])}")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
