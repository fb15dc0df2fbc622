#!/usr/bin/env python
"""Benchmark lorabooth's LoRA core side by side with peft (same models, same inputs, one run).

Rows (each a median over --repeats, the two libraries measured alternately so that machine noise
hits both alike):

* GPT-2 (124M config, random init) and a small diffusers UNet2DConditionModel with LoRA:
  forward (eval, no_grad) and forward+backward (train mode) wall time;
* peak memory of one forward+backward: the highest RSS (sampled every 0.5 ms) above the RSS just
  before it, after one warm-up step, each library in its own fresh subprocess (so neither can
  inherit the other's high-water mark or heap);
* one LoRA-wrapped nn.Linear (768 -> 2304, GPT-2's c_attn size) over 200-call bursts: the adapter's
  own per-call cost, much less exposed to machine noise than whole-model steps;
* latency of get_peft_model (wrapping a fresh GPT-2), of loading a saved adapter
  (PeftModel.from_pretrained, the base model copy excluded) and of set_adapter (switching between
  two loaded adapters).

Prints a table with ratio = lorabooth / peft (< 1 means lorabooth is faster / smaller) and writes
JSON with --out. peft is the oracle only here: it must be installed (the `test` extra pins it).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import datetime as dt
import gc
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable

import torch

warnings.filterwarnings("ignore")

LIBS = ("peft", "lorabooth")
MEMORY_METHOD = ("peak RSS above the RSS just before one forward+backward, after one warm-up step and malloc_trim; "
                 "RSS sampled every 0.5 ms by a thread; a fresh subprocess per library and sample")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed repetitions per row; the median is reported (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls before timing (default 2)")
    parser.add_argument("--seq-len", type=int, default=64, help="GPT-2 input length in tokens (default 64)")
    parser.add_argument("--batch", type=int, default=1, help="batch size for GPT-2 and the UNet (default 1)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank r (default 8; lora_alpha = 2r)")
    parser.add_argument("--gpt2-targets", default="c_attn,c_proj,c_fc",
                        help="comma-separated GPT-2 target modules (default c_attn,c_proj,c_fc)")
    parser.add_argument("--unet-size", type=int, default=32, help="UNet sample size in pixels/latents (default 32)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0 = leave torch's default)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the subprocess peak-memory rows")
    parser.add_argument("--memory-samples", type=int, default=2,
                        help="fresh subprocesses per library for each memory row; median reported (default 2)")
    parser.add_argument("--only", choices=["gpt2", "unet", "layer", "latency"], action="append",
                        help="run only these groups (repeatable); default all")
    parser.add_argument("--out", default=None, help="write the results as JSON to this path")
    return parser.parse_args(argv)


# -- models -----------------------------------------------------------------------------------------
def gpt2_base() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config()).eval()  # the 124M configuration, random weights


def unet_base() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 128),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
    ).eval()


def lib_module(lib: str):
    if lib == "peft":
        import peft

        return peft
    import lorabooth.adapters as lb

    return lb


def wrap(lib: str, base: torch.nn.Module, kind: str, args: argparse.Namespace):
    mod = lib_module(lib)
    if kind == "gpt2":
        cfg = mod.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, task_type="CAUSAL_LM",
                             target_modules=args.gpt2_targets.split(","))
    else:
        cfg = mod.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    torch.manual_seed(1)
    model = mod.get_peft_model(base, cfg)
    # non-zero B so the LoRA branch is real work in both (identical values in both libraries)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
    return model


def inputs(kind: str, args: argparse.Namespace) -> dict:
    g = torch.Generator().manual_seed(3)
    if kind == "gpt2":
        ids = torch.randint(0, 50257, (args.batch, args.seq_len), generator=g)
        return {"input_ids": ids, "labels": ids}
    s = args.unet_size
    return {"sample": torch.randn(args.batch, 4, s, s, generator=g), "timestep": torch.tensor([500] * args.batch),
            "encoder_hidden_states": torch.randn(args.batch, 8, 64, generator=g)}


def loss_of(kind: str, out) -> torch.Tensor:
    return out.loss if kind == "gpt2" else out.sample.float().pow(2).mean()


def forward_once(model, kind: str, x: dict) -> None:
    with torch.no_grad():
        model(**x)


def train_step_once(model, kind: str, x: dict) -> None:
    loss_of(kind, model(**x)).backward()
    model.zero_grad(set_to_none=True)


# -- timing -----------------------------------------------------------------------------------------
def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def side_by_side(make: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Time make[lib]() for both libs, alternating which goes first, after warm-up."""
    for _ in range(warmup):
        for lib in LIBS:
            make[lib]()
    times: dict[str, list[float]] = {lib: [] for lib in LIBS}
    for i in range(repeats):
        order = LIBS if i % 2 == 0 else LIBS[::-1]
        for lib in order:
            times[lib].append(timed(make[lib]))
    return times


def row(name: str, unit: str, values: dict[str, list[float]], scale: float = 1.0) -> dict:
    med = {lib: statistics.median(v) * scale for lib, v in values.items()}
    return {"row": name, "unit": unit, "peft": med["peft"], "lorabooth": med["lorabooth"],
            "ratio": med["lorabooth"] / med["peft"] if med["peft"] else float("nan"),
            "samples": {lib: [v * scale for v in vals] for lib, vals in values.items()}}


def bench_model(kind: str, args: argparse.Namespace) -> list[dict]:
    base = gpt2_base() if kind == "gpt2" else unet_base()
    models = {lib: wrap(lib, copy.deepcopy(base), kind, args) for lib in LIBS}
    del base
    x = inputs(kind, args)
    label = "GPT-2 124M" if kind == "gpt2" else f"UNet {args.unet_size}px"
    for m in models.values():
        m.eval()
    fwd = side_by_side({lib: (lambda m=models[lib]: forward_once(m, kind, x)) for lib in LIBS},
                       args.repeats, args.warmup)
    for m in models.values():
        m.train()
    fb = side_by_side({lib: (lambda m=models[lib]: train_step_once(m, kind, x)) for lib in LIBS},
                      args.repeats, args.warmup)
    return [row(f"{label} forward", "ms", fwd, 1e3), row(f"{label} forward+backward", "ms", fb, 1e3)]


def bench_layer(args: argparse.Namespace) -> list[dict]:
    """One LoRA-wrapped GPT-2-sized nn.Linear (768 -> 2304), timed over many short calls: the adapter's
    own per-call cost, far less exposed to machine noise than a whole-model step."""
    torch.manual_seed(0)
    base = torch.nn.Sequential()
    base.add_module("proj", torch.nn.Linear(768, 2304))
    models = {}
    for lib in LIBS:
        mod = lib_module(lib)
        torch.manual_seed(1)
        models[lib] = mod.get_peft_model(copy.deepcopy(base), mod.LoraConfig(r=args.rank, lora_alpha=2 * args.rank,
                                                                           target_modules=["proj"]))
    x = torch.randn(args.batch, args.seq_len, 768, generator=torch.Generator().manual_seed(3))
    calls = 200

    def fwd(m) -> None:
        with torch.no_grad():
            for _ in range(calls):
                m(x)

    def fwd_bwd(m) -> None:
        for _ in range(calls):
            m(x).sum().backward()

    rows = []
    for label, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
        values = side_by_side({lib: (lambda m=models[lib], fn=fn: fn(m)) for lib in LIBS}, args.repeats, args.warmup)
        rows.append(row(f"one LoRA Linear 768->2304 {label}", "us", values, 1e6 / calls))
    return rows


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so RSS starts from live data
    except (OSError, AttributeError):
        pass


def _peak_rss_during(fn: Callable[[], None], period_s: float = 0.0005) -> int:
    """Highest RSS seen while ``fn`` runs, sampled by a thread (torch ops release the GIL)."""
    stop = threading.Event()
    peak = [_rss_bytes()]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(period_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        stop.set()
        thread.join()
    return max(peak[0], _rss_bytes())


def _memory_step_child(lib: str, kind: str, args: argparse.Namespace, queue) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    model = wrap(lib, gpt2_base() if kind == "gpt2" else unet_base(), kind, args).train()
    x = inputs(kind, args)
    train_step_once(model, kind, x)  # warm-up: one-off kernel workspaces are not the adapter's cost
    gc.collect()
    _malloc_trim()
    before = _rss_bytes()
    peak = _peak_rss_during(lambda: train_step_once(model, kind, x))
    queue.put(max(peak - before, 0))


def bench_memory(kind: str, args: argparse.Namespace) -> dict:
    ctx = mp.get_context("spawn")
    values: dict[str, list[float]] = {lib: [] for lib in LIBS}
    for i in range(max(1, args.memory_samples)):
        for lib in (LIBS if i % 2 == 0 else LIBS[::-1]):
            queue = ctx.Queue()
            proc = ctx.Process(target=_memory_step_child, args=(lib, kind, args, queue))
            proc.start()
            values[lib].append(queue.get())
            proc.join()
    label = "GPT-2 124M" if kind == "gpt2" else f"UNet {args.unet_size}px"
    return row(f"{label} forward+backward peak RSS", "MiB", values, 1 / 2**20)


def bench_latency(args: argparse.Namespace) -> list[dict]:
    base = gpt2_base()
    rows = []
    # get_peft_model: wrap a fresh copy each time; the copy is made outside the timed region
    values: dict[str, list[float]] = {lib: [] for lib in LIBS}
    for i in range(args.repeats):
        for lib in (LIBS if i % 2 == 0 else LIBS[::-1]):
            fresh = copy.deepcopy(base)
            mod = lib_module(lib)
            cfg = mod.LoraConfig(r=args.rank, lora_alpha=2 * args.rank, task_type="CAUSAL_LM",
                                 target_modules=args.gpt2_targets.split(","))
            values[lib].append(timed(lambda mod=mod, fresh=fresh, cfg=cfg: mod.get_peft_model(fresh, cfg)))
    rows.append(row("get_peft_model (GPT-2 124M)", "ms", values, 1e3))
    with tempfile.TemporaryDirectory() as tmp:
        for lib in LIBS:  # each library saves its own adapter (identical weights)
            wrap(lib, copy.deepcopy(base), "gpt2", args).save_pretrained(os.path.join(tmp, lib, "a"))
            wrap(lib, copy.deepcopy(base), "gpt2", args).save_pretrained(os.path.join(tmp, lib, "b"))
        values = {lib: [] for lib in LIBS}
        loaded = {}
        for i in range(args.repeats):
            for lib in (LIBS if i % 2 == 0 else LIBS[::-1]):
                fresh = copy.deepcopy(base)
                mod = lib_module(lib)
                path = os.path.join(tmp, lib, "a")
                start = time.perf_counter()
                loaded[lib] = mod.PeftModel.from_pretrained(fresh, path, adapter_name="a")
                values[lib].append(time.perf_counter() - start)
        rows.append(row("adapter load (from_pretrained)", "ms", values, 1e3))
        for lib in LIBS:
            loaded[lib].load_adapter(os.path.join(tmp, lib, "b"), adapter_name="b")
        names = ["a", "b"]
        counter = {"n": 0}

        def switch(m):
            counter["n"] += 1
            m.set_adapter(names[counter["n"] % 2])

        values = side_by_side({lib: (lambda m=loaded[lib]: switch(m)) for lib in LIBS}, args.repeats * 5, args.warmup)
        rows.append(row("set_adapter (switch of two)", "ms", values, 1e3))
    return rows


def print_table(rows: list[dict]) -> None:
    width = max(len(r["row"]) for r in rows) + 2
    print(f"{'measurement':<{width}}{'unit':>6}{'peft':>12}{'lorabooth':>12}{'ratio':>8}")
    for r in rows:
        print(f"{r['row']:<{width}}{r['unit']:>6}{r['peft']:>12.2f}{r['lorabooth']:>12.2f}{r['ratio']:>8.2f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import peft
    except ImportError:
        print("bench_lora.py compares against peft: pip install 'lorabooth[test]'", file=sys.stderr)
        return 2
    groups = args.only or ["gpt2", "unet", "layer", "latency"]
    rows: list[dict] = []
    for kind in ("gpt2", "unet"):
        if kind in groups:
            rows += bench_model(kind, args)
            if not args.skip_memory:
                rows.append(bench_memory(kind, args))
            print_table(rows[-3:] if not args.skip_memory else rows[-2:])
            sys.stdout.flush()
    if "layer" in groups:
        rows += bench_layer(args)
    if "latency" in groups:
        rows += bench_latency(args)
    print()
    print_table(rows)
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "peft": peft.__version__},
        "memory_method": MEMORY_METHOD,
        "rows": rows,
    }
    if args.out:
        tmp = f"{args.out}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
        os.replace(tmp, args.out)
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
