"""Make `accelerate launch --cpu --num_processes N` really start N processes.

accelerate's ``--cpu`` launcher runs a single process unless an MPI hostfile is given; it only
exports MASTER_ADDR/MASTER_PORT, so a user asking for two CPU processes silently gets one. When we
see that situation we start the N processes ourselves with ``torch.distributed.run`` (gloo) and
``ACCELERATE_USE_CPU=true``, which accelerate turns into its MULTI_CPU mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_DISTRIBUTED_ENV = ("WORLD_SIZE", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _parent_num_processes() -> int | None:
    """``--num_processes`` from the command line of the launcher that started us (Linux /proc)."""
    try:
        words = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if not any(w.endswith("accelerate") or "accelerate" in w for w in words[:3]):
        return None
    for i, word in enumerate(words):
        for flag in ("--num_processes", "--num-processes"):
            if word == flag and i + 1 < len(words):
                value = words[i + 1]
            elif word.startswith(flag + "="):
                value = word.split("=", 1)[1]
            else:
                continue
            return int(value) if value.isdigit() else None
    return None


def requested_cpu_processes() -> int | None:
    """N > 1 when accelerate was asked for N CPU processes but started only this one."""
    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() not in _TRUE or "MASTER_PORT" not in env:
        return None
    if any(k in env for k in _DISTRIBUTED_ENV):
        return None
    n = _parent_num_processes()
    return n if n and n > 1 else None


def relaunch_cpu_processes(n: int, argv: list[str]) -> int:
    """Run this trainer as ``n`` gloo processes on this machine; returns the exit status."""
    print(f"lorabooth: `accelerate launch --cpu` started one process for --num_processes {n}; starting {n} "
          f"CPU processes (gloo) with torch.distributed.run", file=sys.stderr, flush=True)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(n),
        "--master_addr", os.environ.get("MASTER_ADDR", "127.0.0.1"), "--master_port", os.environ["MASTER_PORT"],
        "-m", "lorabooth.trainer.train_dreambooth", *argv,
    ]
    return subprocess.call(cmd, env={**os.environ, "ACCELERATE_USE_CPU": "true"})
