"""Read a training run's progress from what the trainer writes: its log and its output folder.

The trainer is a separate process; the app only reads files. A metrics JSONL in the output
folder (one ``{"step": .., "loss": ..}`` object a line) is preferred when present; otherwise the
tqdm lines in the log give step, total, rate and loss.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# tqdm: "Steps:  45%|####5     | 45/100 [00:05<00:06,  8.50it/s, loss=0.123, lr=0.0001]"
_TQDM = re.compile(
    r"(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<elapsed>[\d:]+)<(?P<eta>[\d:?]+)"
    r"(?:,\s*(?P<rate>[\d.]+|\?)\s*(?P<unit>it/s|s/it))?(?P<post>[^\]\r\n]*)\]"
)
_LOSS = re.compile(r"\bloss=(?P<loss>[-+\d.eE]+|nan|inf)")
MAIN_BAR = "Steps"  # the trainer's tqdm description of the optimiser-step bar
METRICS_FILES = ("metrics.jsonl", "logs/metrics.jsonl", "progress.jsonl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class Progress:
    step: int = 0
    total: int = 0
    rate: float | None = None  # iterations per second
    eta: str = ""
    losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0

    def summary(self) -> str:
        if not self.total:
            return "starting: loading the base model and preparing the data"
        rate = f"{self.rate:.2f} it/s" if self.rate else "? it/s"
        eta = f", ETA {self.eta}" if self.eta and self.eta != "?" else ""
        return f"step {self.step}/{self.total} ({100 * self.fraction:.0f}%), {rate}{eta}"


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_tqdm(text: str) -> Progress:
    """The last tqdm update in ``text`` plus every loss value seen, keyed by its step."""
    prog = Progress()
    losses: dict[int, float] = {}
    # only the optimiser-step bar counts: model loading, class-image generation and validation
    # sampling print their own tqdm bars into the same log
    main = [s for s in re.split(r"[\r\n]", text) if s.lstrip().startswith(MAIN_BAR)]
    for m in _TQDM.finditer("\n".join(main)):
        n, total = int(m["n"]), int(m["total"])
        prog.step, prog.total, prog.eta = n, total, m["eta"]
        rate = _to_float(m["rate"] or "")
        if rate:
            prog.rate = rate if m["unit"] == "it/s" else 1.0 / rate
        loss = _LOSS.search(m["post"] or "")
        if loss and (value := _to_float(loss["loss"])) is not None:
            losses[n] = value
    prog.losses = sorted(losses.items())
    return prog


def read_metrics(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_progress(log_path: Path, output_dir: Path) -> Progress:
    """Progress from the log's tqdm lines, with losses from a metrics JSONL when the trainer wrote one."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    prog = parse_tqdm(text)
    for name in METRICS_FILES:
        path = output_dir / name
        if path.exists():
            rows = [r for r in read_metrics(path) if "step" in r]
            losses = [(int(r["step"]), float(r["loss"])) for r in rows if isinstance(r.get("loss"), int | float)]
            if losses:
                prog.losses = losses
            if rows and int(rows[-1]["step"]) > prog.step:
                prog.step = int(rows[-1]["step"])
                prog.total = int(rows[-1].get("max_train_steps", prog.total) or prog.total)
            break
    return prog


def validation_images(output_dir: Path, limit: int = 4) -> list[Path]:
    """Newest validation images the trainer saved (any image under the output folder, newest first)."""
    if not output_dir.exists():
        return []
    folder = output_dir / "validation" if (output_dir / "validation").is_dir() else output_dir
    found = [
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and "class" not in p.parent.name
    ]
    found.sort(key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    return found[:limit]


def tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a log, with tqdm's carriage-return redraws collapsed."""
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        data = f.read().decode(errors="replace")
    out = []
    for line in data.split("\n"):
        redraws = [seg for seg in line.split("\r") if seg.strip()]
        out.append(redraws[-1] if redraws else "")
    return "\n".join(out[-lines:]).strip("\n")
