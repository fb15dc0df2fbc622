#!/usr/bin/env python
"""Benchmark lorabooth's LoRA formats and mixing against diffusers / peft, side by side in one run.

Measures (medians over --repeats, in milliseconds), each next to its anchor:

1. load a kohya-format SD-1.5-shaped LoRA (UNet + text encoder) into a pipeline:
   lorabooth ``load_lora_into_pipeline`` vs diffusers ``StableDiffusionPipeline.load_lora_weights``;
2. switch between two loaded adapters: lorabooth ``AdapterMixer.set_adapters`` vs peft ``set_adapter``
   (as diffusers' ``unet.set_adapter`` calls it);
3. mix two adapters: lorabooth ``add_weighted_adapter`` vs peft ``add_weighted_adapter``, per combination type.

Ratios are lorabooth / anchor (below 1.0 = lorabooth faster). Base weights are zeros (the timings do not
depend on them); the UNet and text encoder have SD 1.5's real shapes unless --size tiny.

    python scripts/bench_formats.py --json bench_formats.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8)
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def _zeros_on_cpu(build):
    """Build a model on the meta device and materialise it as zeros: SD-sized models in seconds."""
    with torch.device("meta"):
        model = build()
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for b in model.buffers():
            b.zero_()
    return model.eval()


def build_pipeline(size: str):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_cfg = SD15_UNET if size == "sd15" else TINY_UNET
    te_cfg = (CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
              if size == "sd15" else CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                                    num_attention_heads=4, vocab_size=100))
    unet = _zeros_on_cpu(lambda: UNet2DConditionModel(**unet_cfg))
    te = _zeros_on_cpu(lambda: CLIPTextModel(te_cfg))
    return StableDiffusionPipeline(vae=None, text_encoder=te, tokenizer=None, unet=unet, scheduler=None,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def make_kohya_file(pipe, path: Path, rank: int, alpha: float, seed: int) -> int:
    from lorabooth.adapters.formats import LoraFile, LoraModule, save_lora

    g = torch.Generator().manual_seed(seed)
    lora = LoraFile()
    for part, model, targets in (("unet", pipe.unet, UNET_TARGETS), ("text_encoder", pipe.text_encoder, TE_TARGETS)):
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and name.endswith(targets):
                w = m.weight
                down = torch.randn(rank, *w.shape[1:], generator=g) * 0.01
                up = torch.randn(w.shape[0], rank, *([1, 1] if w.dim() == 4 else []), generator=g) * 0.01
                lora.modules[(part, name)] = LoraModule(down, up, alpha)
    save_lora(lora, path, to="kohya")
    return len(lora.modules)


def median_ms(fn, repeats: int, setup=None, teardown=None) -> float:
    times = []
    for _ in range(repeats):
        if setup:
            setup()
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if teardown:
            teardown()
    return statistics.median(times)


def bench_load(pipe, file: Path, repeats: int) -> dict:
    from lorabooth.adapters.formats.apply import load_lora_into_pipeline, remove_lora

    def ours():
        load_lora_into_pipeline(pipe, file, "bench")

    def ours_undo():
        remove_lora(pipe.unet)
        remove_lora(pipe.text_encoder)

    def theirs():
        pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name="bench")

    res = {}
    # interleave so background load hits both sides alike
    a, b = [], []
    for _ in range(repeats):
        a.append(median_ms(ours, 1, teardown=ours_undo))
        b.append(median_ms(theirs, 1, teardown=pipe.unload_lora_weights))
    res["lorabooth_ms"], res["anchor_ms"] = statistics.median(a), statistics.median(b)
    res["anchor"] = "diffusers StableDiffusionPipeline.load_lora_weights"
    return res


def bench_switch(pipe, files: list[Path], repeats: int) -> dict:
    from lorabooth.adapters.formats.apply import load_lora_into_pipeline, remove_lora
    from lorabooth.adapters.mixing import AdapterMixer

    n = 20
    for i, f in enumerate(files):
        pipe.load_lora_weights(str(f.parent), weight_name=f.name, adapter_name=f"a{i}")
    theirs = median_ms(lambda: [pipe.unet.set_adapter(f"a{i % 2}") for i in range(n)], repeats) / n
    pipe.unload_lora_weights()
    for i, f in enumerate(files):
        load_lora_into_pipeline(pipe, f, f"a{i}")
    mixer = AdapterMixer(pipe.unet)
    ours = median_ms(lambda: [mixer.set_adapters(f"a{i % 2}") for i in range(n)], repeats) / n
    weighted = median_ms(lambda: [mixer.set_adapters(["a0", "a1"], [i / n, 1 - i / n]) for i in range(n)], repeats) / n
    remove_lora(pipe.unet)
    remove_lora(pipe.text_encoder)
    return {"lorabooth_ms": ours, "anchor_ms": theirs, "lorabooth_weighted_two_ms": weighted,
            "anchor": "peft set_adapter (diffusers unet.set_adapter)"}


def bench_mix(pipe, types: list[str], rank: int, repeats: int) -> dict:
    """peft and lorabooth each wrap their own zero-weight copy of the UNet; per type the two are timed in turn."""
    import peft
    from lorabooth.adapters import LoraConfig, get_peft_model
    from lorabooth.adapters.mixing import add_weighted_adapter

    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    kwargs = {"ties": {"density": 0.5}, "dare_linear": {"density": 0.5}, "magnitude_prune": {"density": 0.5},
              "ties_svd": {"density": 0.5}}
    theirs_model = peft.get_peft_model(pipe.unet, peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=targets,
                                                                  init_lora_weights=False))
    theirs_model.add_adapter("b", peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=targets,
                                                  init_lora_weights=False))
    from diffusers import UNet2DConditionModel

    other_unet = _zeros_on_cpu(lambda: UNet2DConditionModel(**dict(pipe.unet.config)))
    ours_model = get_peft_model(other_unet, LoraConfig(r=rank, lora_alpha=rank, target_modules=targets,
                                                       init_lora_weights=False))
    ours_model.add_adapter("b", LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False))
    out = {}
    for t in types:
        a, b = [], []
        for _ in range(repeats):
            b.append(median_ms(lambda t=t: theirs_model.add_weighted_adapter(
                ["default", "b"], [0.6, 0.4], "mix", combination_type=t, **kwargs.get(t, {})), 1,
                teardown=lambda: theirs_model.delete_adapter("mix")))
            a.append(median_ms(lambda t=t: add_weighted_adapter(
                ours_model, ["default", "b"], [0.6, 0.4], "mix", combination_type=t, **kwargs.get(t, {})), 1,
                teardown=lambda: ours_model.delete_adapter("mix")))
        out[t] = {"lorabooth_ms": statistics.median(a), "anchor_ms": statistics.median(b),
                  "anchor": "peft add_weighted_adapter"}
    theirs_model.unload()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--size", choices=("sd15", "tiny"), default="sd15", help="model shapes (default: SD 1.5)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank of the benchmark adapters (default 8)")
    p.add_argument("--repeats", type=int, default=5, help="repetitions per measurement; medians are reported")
    p.add_argument("--mix-types", default="linear,cat,ties",
                   help="comma-separated combination types to time (default linear,cat,ties; the svd types take "
                        "minutes at SD size on a CPU)")
    p.add_argument("--json", type=Path, help="write the results here as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    pipe = build_pipeline(args.size)
    results: dict = {"config": {"size": args.size, "rank": args.rank, "repeats": args.repeats,
                                "torch": torch.__version__, "threads": torch.get_num_threads(),
                                "machine": platform.platform(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / f"lora{i}.safetensors" for i in range(2)]
        counts = [make_kohya_file(pipe, f, args.rank, args.rank / 2, seed=i) for i, f in enumerate(files)]
        results["config"].update({"lora_modules": counts[0], "file_mib": round(files[0].stat().st_size / 2**20, 2)})
        results["load"] = bench_load(pipe, files[0], args.repeats)
        results["switch"] = bench_switch(pipe, files, args.repeats)
    results["mix"] = bench_mix(pipe, [t for t in args.mix_types.split(",") if t], args.rank, args.repeats)
    rows = [("load kohya LoRA", results["load"]), ("switch adapter", results["switch"])]
    rows += [(f"mix {t}", r) for t, r in results["mix"].items()]
    print(f"{'benchmark':<22} {'lorabooth ms':>13} {'anchor ms':>11} {'ratio':>7}  anchor")
    for name, r in rows:
        r["ratio"] = r["lorabooth_ms"] / r["anchor_ms"] if r["anchor_ms"] > 0 else float("nan")
        print(f"{name:<22} {r['lorabooth_ms']:13.3f} {r['anchor_ms']:11.3f} {r['ratio']:7.3f}  {r['anchor']}")
    print(f"(weighted two-adapter switch: {results['switch']['lorabooth_weighted_two_ms']:.3f} ms; "
          f"{results['config']['lora_modules']} LoRA modules, {results['config']['file_mib']} MiB file; "
          f"total {time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
