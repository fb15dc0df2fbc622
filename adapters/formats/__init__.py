"""Read, write and convert LoRA files between PEFT, diffusers and kohya/A1111/ComfyUI, without losing anything.

    lora = load_lora("my_lora.safetensors")          # format auto-detected: lora.format, lora.unused_keys
    save_lora(lora, "out_dir", to="peft")             # or "diffusers", "kohya"
    print(describe(lora))                             # what `lorabooth inspect` prints

Everything goes through ``LoraFile``, a format-free form (per module: down, up, alpha). Errors are
``FormatError`` (an ``AdapterFileError``, hence a ``ValueError``); nothing is written when one is raised.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from .diffusers_format import WEIGHTS_NAME as DIFFUSERS_WEIGHTS_NAME
from .diffusers_format import looks_like_diffusers, read_diffusers, write_diffusers
from .kohya_format import looks_like_kohya, read_kohya, write_kohya
from .lora_file import PARTS, LoraFile, LoraModule, lora_delta
from .names import flatten, guess_base, unflatten
from .peft_format import CONFIG_NAME, is_peft_folder, list_named_adapters, read_peft, write_peft
from .safeio import FormatError, check_finite, parse_header, read_safetensors

FORMATS = ("peft", "diffusers", "kohya")

__all__ = [
    "FORMATS", "PARTS", "FormatError", "LoraFile", "LoraModule", "check_against_model", "convert", "cross_attn_dim",
    "describe",
    "detect_format", "flatten", "guess_base", "list_named_adapters", "load_lora", "lora_delta", "read_diffusers",
    "read_kohya", "read_peft", "save_lora", "unflatten", "write_diffusers", "write_kohya", "write_peft",
]


def _safetensors_keys(file: Path) -> list[str]:
    with open(file, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise FormatError(f"{file}: too short to be a safetensors file (truncated?)")
        n = int.from_bytes(head, "little")
        size = os.fstat(fh.fileno()).st_size
        if n > size - 8:
            raise FormatError(f"{file}: safetensors header runs past the end of the file (truncated?)")
        header, _ = parse_header(head + fh.read(n), str(file), file_size=size)
    return list(header)


def detect_format(path: str | os.PathLike) -> str:
    """``"peft"``, ``"diffusers"`` or ``"kohya"``, judged by layout and key names; ``FormatError`` otherwise."""
    path = Path(path)
    if path.is_dir():
        if is_peft_folder(path):
            return "peft"
        if (path / DIFFUSERS_WEIGHTS_NAME).is_file():
            return detect_format(path / DIFFUSERS_WEIGHTS_NAME)
        raise FormatError(f"{path}: folder has neither {CONFIG_NAME} (PEFT) nor {DIFFUSERS_WEIGHTS_NAME} "
                          "(diffusers); point at the adapter folder or the .safetensors file itself")
    if not path.is_file():
        raise FormatError(f"{path}: no such file or folder")
    if path.name == CONFIG_NAME or (path.parent / CONFIG_NAME).is_file():
        return "peft"
    keys = _safetensors_keys(path)
    if looks_like_kohya(keys):
        return "kohya"
    if any(k.startswith("base_model.model.") for k in keys):
        return "peft"
    if looks_like_diffusers(keys):
        return "diffusers"
    sample = ", ".join(keys[:3]) or "(no tensors)"
    raise FormatError(f"{path}: not a LoRA file lorabooth knows (keys like {sample}); expected PEFT "
                      "(base_model.model.*.lora_A), diffusers (unet.*.lora_A / *.lora.down) or kohya (lora_unet_*)")


def load_lora(path: str | os.PathLike, *, adapter_name: str | None = None,
              module_names: dict[str, Iterable[str]] | None = None, part: str | None = None) -> LoraFile:
    """Read any supported LoRA file or folder into a ``LoraFile``; NaN/Inf weights are refused.

    ``adapter_name`` picks a named sub-adapter of a PEFT folder; ``module_names`` (part -> module paths of the
    real model) makes kohya name mapping exact; ``part`` says which model a PEFT folder is for.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "peft":
        folder = path if path.is_dir() else path.parent
        if not (folder / CONFIG_NAME).is_file() and not path.is_dir():
            lora = _read_bare_peft_weights(path, part)
        else:
            lora = read_peft(folder, adapter_name=adapter_name, part=part)
    elif fmt == "diffusers":
        lora = read_diffusers(path if path.is_file() else path / DIFFUSERS_WEIGHTS_NAME)
    else:
        lora = read_kohya(path, module_names=module_names)
    if not lora.modules:
        raise FormatError(f"{path}: detected {fmt} format but found no complete LoRA pairs "
                          f"({len(lora.unused_keys)} keys unused); is it a LoRA at all?")
    check_finite({f"{p}.{n}.{h}": t for (p, n), m in lora.modules.items() for h, t in
                  (("down", m.down), ("up", m.up))}, str(path))
    return lora


def _read_bare_peft_weights(file: Path, part: str | None) -> LoraFile:
    from .names import guess_part
    from .peft_format import _KEY

    tensors, meta = read_safetensors(file)
    lora = LoraFile(format="peft (weights without adapter_config.json)", source=str(file), metadata=meta)
    halves: dict[str, dict] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if m:
            halves.setdefault(m.group(1), {})[m.group(2)] = t
        else:
            lora.unused_keys.append(key)
    part = part or guess_part(halves)
    for path, pair in halves.items():
        if set(pair) == {"A", "B"}:
            lora.modules[(part, path)] = LoraModule(pair["A"], pair["B"], alpha=float(pair["A"].shape[0]))
    lora.notes.append("no adapter_config.json: alpha unknown, assumed = rank (scale 1); put the config "
                      "next to the file for exact scales")
    return lora


def save_lora(lora: LoraFile, path: str | os.PathLike, to: str, **options) -> list[Path]:
    """Write ``lora`` as ``to`` in {"peft", "diffusers", "kohya"}; returns the files written.

    peft: ``path`` is a folder. diffusers: a folder or a ``.safetensors`` path (``fold_alpha=``).
    kohya: a ``.safetensors`` path (``base_model=``, ``trigger_words=``, ``training=``).
    Validates everything (finite weights, consistent shapes) before the first byte is written.
    """
    path = Path(path)
    if to not in FORMATS:
        raise FormatError(f"unknown target format {to!r}; choose one of {FORMATS}")
    if not lora.modules:
        raise FormatError(f"{path}: the adapter has no LoRA modules, nothing to write")
    for (part, name), mod in lora.modules.items():
        if mod.down.shape[0] != mod.up.shape[1]:
            raise FormatError(f"{part}.{name}: lora_down has rank {mod.down.shape[0]} but lora_up expects "
                              f"{mod.up.shape[1]}; the adapter is inconsistent")
    check_finite({f"{p}.{n}.{h}": t for (p, n), m in lora.modules.items() for h, t in
                  (("down", m.down), ("up", m.up))}, str(path))
    if to == "peft":
        return write_peft(lora, path, base_model=options.get("base_model"))
    if to == "diffusers":
        return write_diffusers(lora, path, fold_alpha=bool(options.get("fold_alpha", False)))
    if path.suffix != ".safetensors":
        raise FormatError(f"{path}: kohya LoRAs are single .safetensors files; give a path ending in .safetensors")
    return write_kohya(lora, path, base_model=options.get("base_model"),
                       trigger_words=options.get("trigger_words"), training=options.get("training"))


def convert(src: str | os.PathLike, dst: str | os.PathLike, to: str, **options) -> tuple[LoraFile, list[Path]]:
    """Read ``src`` (any format) and write it to ``dst`` as ``to``."""
    read_opts = {k: options.pop(k) for k in ("adapter_name", "module_names", "part") if k in options}
    lora = load_lora(src, **read_opts)
    return lora, save_lora(lora, dst, to, **options)


def check_against_model(lora: LoraFile, module_names: dict[str, Iterable[str]],
                        model_base: str | None = None) -> list[str]:
    """Raise if no module of ``lora`` exists in the given model parts, naming the base the file looks like.

    Returns the modules that were not found (partial matches are reported, not fatal).
    """
    known = {part: set(names) for part, names in module_names.items()}
    missing = [f"{p}.{n}" for (p, n) in lora.modules if n not in known.get(p, set())]
    if len(missing) == len(lora.modules):
        looks = guess_base(lora.modules, cross_attn_dim(lora))
        got = model_base or guess_base([(p, n) for p, ns in known.items() for n in ns])
        raise FormatError(f"{lora.source or 'adapter'}: none of its {len(lora.modules)} modules exist in the "
                          f"model (e.g. {missing[0]!r}). The file looks like a {looks} LoRA, the model like "
                          f"{got}; load it into a matching base model")
    return missing


def cross_attn_dim(lora: LoraFile) -> int | None:
    """The UNet's cross-attention width (768 SD1, 1024 SD2, 2048 SDXL) read off attn2.to_k/to_v, if present."""
    for (part, name), mod in lora.modules.items():
        if part == "unet" and name.endswith(("attn2.to_k", "attn2.to_v")):
            return int(mod.down.shape[1])
    return None


def describe(lora: LoraFile) -> str:
    """Human-readable summary: format, base, targets, ranks, alphas, size, metadata, unused keys."""
    ranks = sorted({m.rank for m in lora.modules.values()})
    alphas = sorted({m.alpha for m in lora.modules.values()})
    dtypes = sorted({str(m.down.dtype).removeprefix("torch.") for m in lora.modules.values()})
    size = sum(m.down.numel() * m.down.element_size() + m.up.numel() * m.up.element_size()
               for m in lora.modules.values())
    lines = [f"source:   {lora.source}", f"format:   {lora.format}",
             f"base:     {guess_base(lora.modules, cross_attn_dim(lora))}",
             f"modules:  {len(lora.modules)} ({', '.join(f'{p}: {len(lora.part_modules(p))}' for p in lora.parts())})",
             f"ranks:    {ranks}", f"alphas:   {[int(a) if a.is_integer() else a for a in alphas]}"
             + ("  (rsLoRA: scale = alpha/sqrt(r))" if lora.use_rslora else "  (scale = alpha/r)"),
             f"params:   {lora.num_parameters():,d} ({size / 2**20:.2f} MiB, {'/'.join(dtypes)})"]
    # the layer kind: what follows the last block index (attn1.to_q, ff.net.2, conv1, self_attn.q_proj)
    kinds = sorted({re.split(r"\.\d+\.(?=[^\d])", n)[-1] for _, n in lora.modules})
    lines.append(f"targets:  {', '.join(kinds)}")
    for key in sorted(lora.metadata):
        value = lora.metadata[key]
        lines.append(f"meta:     {key} = {value if len(value) <= 120 else value[:117] + '...'}")
    for note in lora.notes:
        lines.append(f"note:     {note}")
    if lora.unused_keys:
        shown = ", ".join(lora.unused_keys[:8]) + (" ..." if len(lora.unused_keys) > 8 else "")
        lines.append(f"unused:   {len(lora.unused_keys)} keys not converted: {shown}")
    else:
        lines.append("unused:   none (every key was used)")
    return "\n".join(lines)
