"""Atomic, pruned, exactly resumable checkpoints.

A checkpoint folder ``checkpoint-<step>`` holds accelerate's state (optimizer, scaler, lr schedule,
global RNG states of every process), the adapters in PEFT layout (``unet/``, ``text_encoder/``; the
frozen base is never copied) or the full weights, and ``trainer_state_<rank>.json`` +
``.safetensors`` with the global step and each process's noise generator. It is assembled in a
hidden ``.checkpoint-<step>.tmp`` folder and renamed into place only when complete, so a killed
run never leaves a checkpoint that looks valid but is not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .args import ConfigError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def checkpoint_step(path: Path) -> int:
    m = _CHECKPOINT.match(path.name)
    if not m:
        raise ConfigError(f"--resume_from_checkpoint {path}: folder name must be checkpoint-<step>")
    return int(m.group(1))


def resolve_resume(output_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: None (start fresh), the newest for "latest", or a given path."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_absolute() and not path.exists():
        path = output_dir / resume
    if not path.is_dir():
        raise ConfigError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
    checkpoint_step(path)
    return path


def prune_checkpoints(output_dir: Path, keep: int | None) -> list[Path]:
    """Delete the oldest checkpoints so at most ``keep`` remain; returns what was removed."""
    if keep is None:
        return []
    found = list_checkpoints(output_dir)
    doomed = found[: max(0, len(found) - keep)]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a completed folder into place, replacing an older one of the same name."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_checkpoint(accelerator, output_dir: Path, step: int, generator: torch.Generator, limit: int | None) -> Path:
    """Collective: every process calls it. Returns the final checkpoint folder."""
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    rank = accelerator.process_index
    save_file({"noise_generator": generator.get_state()}, str(tmp / f"trainer_state_{rank}.safetensors"))
    (tmp / f"trainer_state_{rank}.json").write_text(
        json.dumps({"global_step": step, "num_processes": accelerator.num_processes}, indent=2)
    )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # Leave room for the new one so the folder never holds more than `limit`.
        prune_checkpoints(output_dir, None if limit is None else max(0, limit - 1))
        replace_dir(tmp, final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path, generator: torch.Generator) -> int:
    """Restore everything ``save_checkpoint`` wrote; returns the global step to continue from."""
    rank = accelerator.process_index
    meta_path = path / f"trainer_state_{rank}.json"
    if not meta_path.is_file():
        raise ConfigError(
            f"--resume_from_checkpoint {path}: no {meta_path.name}; it was written by a different number of "
            f"processes or is not a lorabooth checkpoint"
        )
    meta = json.loads(meta_path.read_text())
    if meta["num_processes"] != accelerator.num_processes:
        raise ConfigError(
            f"--resume_from_checkpoint {path}: saved with {meta['num_processes']} processes, now "
            f"{accelerator.num_processes}; resume with the same `accelerate launch --num_processes`"
        )
    accelerator.load_state(str(path))
    state = load_file(str(path / f"trainer_state_{rank}.safetensors"))
    generator.set_state(state["noise_generator"])
    return int(meta["global_step"])
