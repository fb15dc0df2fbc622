"""Train-step time and peak memory of lorabooth's DreamBooth trainer, side by side with diffusers'.

Part 1 (anchor comparison, equal settings): LoRA DreamBooth on the world model with lorabooth's
``trainer/train_dreambooth.py`` and diffusers' ``examples/dreambooth/train_dreambooth_lora.py``
(path given with ``--diffusers-script``; not shipped here). Each trainer runs twice, for a short
and a long number of steps, so s/step = (t_long - t_short) / (steps_long - steps_short) excludes
start-up; peak memory is the peak RSS of each trainer's process tree, sampled every 20 ms.

Part 2 (T4 fit): an SD-1.5-architecture UNet + text encoder with random weights from the real
configs, 512x512, batch 1 + 1 prior image, r=16 LoRA on UNet and text encoder, gradient
checkpointing; fp16 + 8-bit AdamW on a GPU (reports ``torch.cuda.max_memory_allocated``), fp32 +
AdamW on a CPU (reports peak RSS and s/step).

Get the anchor script (any diffusers checkout whose version matches the installed diffusers):

    git clone --depth 1 https://github.com/huggingface/diffusers /tmp/diffusers
    python scripts/bench_train.py --diffusers-script /tmp/diffusers/examples/dreambooth/train_dreambooth_lora.py

It imports torchvision only for five transforms; torchvision is not installed here (it breaks
diffusers/transformers imports on this torch), so the benchmark runs a temporary copy of the script
whose import points at a small local module with those transforms (PIL + torch).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The five torchvision transforms the anchor uses, in PIL + torch, with torchvision's semantics.
TRANSFORMS_SHIM = '''
import numpy as np
import torch
from PIL import Image


class InterpolationMode:
    NEAREST = Image.Resampling.NEAREST
    BILINEAR = Image.Resampling.BILINEAR
    BICUBIC = Image.Resampling.BICUBIC
    LANCZOS = Image.Resampling.LANCZOS
    BOX = Image.Resampling.BOX
    HAMMING = Image.Resampling.HAMMING


class Compose:
    def __init__(self, ts):
        self.ts = ts

    def __call__(self, x):
        for t in self.ts:
            x = t(x)
        return x


class Resize:
    def __init__(self, size, interpolation=InterpolationMode.BILINEAR):
        self.size, self.interpolation = size, interpolation

    def __call__(self, img):
        w, h = img.size
        s = self.size / min(w, h)
        return img.resize((max(self.size, round(w * s)), max(self.size, round(h * s))), self.interpolation)


class CenterCrop:
    def __init__(self, size):
        self.size = size

    def __call__(self, img):
        w, h = img.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        return img.crop((left, top, left + self.size, top + self.size))


class RandomCrop(CenterCrop):
    def __call__(self, img):
        w, h = img.size
        left = int(torch.randint(0, w - self.size + 1, (1,)))
        top = int(torch.randint(0, h - self.size + 1, (1,)))
        return img.crop((left, top, left + self.size, top + self.size))


class ToTensor:
    def __call__(self, img):
        return torch.from_numpy(np.asarray(img, dtype=np.float32).copy() / 255.0).permute(2, 0, 1)


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean[0], std[0]

    def __call__(self, x):
        return (x - self.mean) / self.std
'''


class PeakRSS:
    """Peak resident memory of a process and its children, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            self._stop.wait(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def timed_run(cmd: list[str], env: dict, cwd: Path, log: Path) -> tuple[float, int]:
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
        meter = PeakRSS(proc.pid)
        code = proc.wait()
        elapsed = time.perf_counter() - t0
        peak = meter.stop()
    if code != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{cmd[1]} failed with exit code {code}; log {log}:\n{tail}")
    return elapsed, peak


def prepare_anchor(script: Path, work: Path) -> Path:
    """A temporary copy of diffusers' script whose torchvision import uses our five-transform shim."""
    text = script.read_text()
    if "from torchvision import transforms" not in text:
        raise SystemExit(f"--diffusers-script {script}: not diffusers' train_dreambooth_lora.py "
                         f"(no torchvision transforms import)")
    text = text.replace("from torchvision import transforms", "import _tv_transforms as transforms")
    # The anchor pins a minimum diffusers dev version; the installed release is what we compare against.
    text = re.sub(r'^check_min_version\(".*"\)$', "", text, flags=re.M)
    dest = work / "anchor"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "_tv_transforms.py").write_text(TRANSFORMS_SHIM)
    (dest / "train_dreambooth_lora.py").write_text(text)
    return dest / "train_dreambooth_lora.py"


def common_flags(model: Path, instance: Path, out: Path, steps: int, resolution: int, rank: int) -> list[str]:
    return [
        "--pretrained_model_name_or_path", str(model), "--instance_data_dir", str(instance),
        "--instance_prompt", "a photo of sks star", "--output_dir", str(out), "--resolution", str(resolution),
        "--center_crop", "--train_batch_size", "1", "--max_train_steps", str(steps), "--learning_rate", "1e-4",
        "--lr_scheduler", "constant", "--lr_warmup_steps", "0", "--checkpointing_steps", "100000",
        "--seed", "0", "--train_text_encoder", "--rank", str(rank), "--mixed_precision", "no",
        "--report_to", "tensorboard",
    ]


def part1(args: argparse.Namespace, work: Path) -> dict:
    model = Path(args.model)
    unet_cfg = json.loads((model / "unet" / "config.json").read_text())
    vae_cfg = json.loads((model / "vae" / "config.json").read_text())
    resolution = unet_cfg["sample_size"] * 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    instance = work / "instance"  # images only: the anchor would choke on subject.json
    instance.mkdir(exist_ok=True)
    for p in sorted(Path(args.subject).glob("*.png")):
        shutil.copy(p, instance / p.name)
    anchor = prepare_anchor(Path(args.diffusers_script), work)
    ours = REPO / "trainer" / "train_dreambooth.py"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    short, long = args.steps_short, args.steps_long
    results: dict[str, dict] = {}
    for name, script, extra in (("lorabooth", ours, ["--use_lora"]), ("diffusers", anchor, [])):
        times, peaks = {}, {}
        for steps in (short, long):
            out = work / f"{name}-{steps}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, str(script), *common_flags(model, instance, out, steps, resolution, args.rank),
                   *extra]
            times[steps], peaks[steps] = timed_run(cmd, env, script.parent, work / f"{name}-{steps}.log")
            print(f"  {name:9s} {steps:4d} steps: {times[steps]:7.1f} s wall, peak RSS {peaks[steps] / 2**20:7.0f} MiB",
                  flush=True)
        results[name] = {"s_per_step": (times[long] - times[short]) / (long - short),
                         "peak_rss_mib": max(peaks.values()) / 2**20, "startup_s": times[short]}
    results["ratio"] = {
        "time": results["lorabooth"]["s_per_step"] / results["diffusers"]["s_per_step"],
        "memory": results["lorabooth"]["peak_rss_mib"] / results["diffusers"]["peak_rss_mib"],
    }
    results["settings"] = {"resolution": resolution, "rank": args.rank, "batch": 1, "text_encoder_lora": True,
                           "steps": [short, long], "threads": os.environ.get("OMP_NUM_THREADS", "default")}
    return results


# ---- part 2: SD-1.5 architecture -------------------------------------------------------------------

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "norm_num_groups": 32, "act_fn": "silu", "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0,
}
SD15_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
    "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "act_fn": "silu",
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}
SD15_TEXT = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
}


def part2(args: argparse.Namespace) -> dict:
    """A few training steps of the SD-1.5-sized LoRA setup with the trainer's own building blocks."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from lorabooth.trainer.lora import add_lora, trainable_parameters
    from lorabooth.trainer.train_dreambooth import enable_gradient_checkpointing
    from transformers import CLIPTextConfig, CLIPTextModel

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    half = torch.float16 if cuda else torch.float32
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).to(device, half)
    vae = AutoencoderKL(**SD15_VAE).to(device, half)
    te = CLIPTextModel(CLIPTextConfig(**SD15_TEXT)).to(device, half)
    for m in (unet, vae, te):
        m.requires_grad_(False)
    add_lora(unet, r=16, alpha=16, dropout=0.0, targets=["to_q", "to_k", "to_v", "to_out.0"])
    add_lora(te, r=16, alpha=16, dropout=0.0, targets=["q_proj", "k_proj", "v_proj", "out_proj"])
    params = trainable_parameters(unet) + trainable_parameters(te)
    for p in params:
        p.data = p.data.float()
    enable_gradient_checkpointing(unet, te)
    unet.train()
    te.train()
    if cuda:
        import bitsandbytes as bnb

        opt = bnb.optim.AdamW8bit(params, lr=1e-4)
    else:
        opt = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if cuda else None
    sched = DDPMScheduler(num_train_timesteps=1000)
    ids = torch.randint(0, 49407, (2, 77), device=device)
    pixels = torch.rand(2, 3, 512, 512, device=device, dtype=half) * 2 - 1
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.sd15_steps):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            with torch.no_grad():
                latents = vae.encode(pixels).latent_dist.sample() * 0.18215
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (2,), device=device)
            pred = unet(sched.add_noise(latents, noise, t), t, te(ids)[0]).sample
            loss = F.mse_loss(pred.float(), noise.float())
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    out = {"device": str(device), "precision": "fp16 + 8-bit AdamW" if cuda else "fp32 + AdamW",
           "s_per_step": sum(times[1:]) / max(1, len(times) - 1) if len(times) > 1 else times[0],
           "steps": len(times), "trainable_params": sum(p.numel() for p in params)}
    if cuda:
        out["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        import psutil

        out["peak_rss_gib"] = _peak_rss_self() / 2**30
        out["rss_now_gib"] = psutil.Process().memory_info().rss / 2**30
    return out


def _peak_rss_self() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--diffusers-script", help="path of diffusers' examples/dreambooth/train_dreambooth_lora.py")
    p.add_argument("--model", default=str(REPO / "assets" / "world-model"), help="base model for part 1")
    p.add_argument("--subject", default=str(REPO / "assets" / "demo-subject"), help="instance images for part 1")
    p.add_argument("--steps-short", type=int, default=10, help="steps of the short run (start-up baseline)")
    p.add_argument("--steps-long", type=int, default=60, help="steps of the long run")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank (alpha = rank) for part 1")
    p.add_argument("--sd15-steps", type=int, default=3, help="steps of part 2 (0 skips it)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
        if args.diffusers_script:
            print(f"part 1: world model {args.model}, lorabooth vs diffusers' train_dreambooth_lora.py", flush=True)
            r = part1(args, Path(tmp))
            report["world_model"] = r
            print(f"\n{'':12s}{'s/step':>10s}{'peak RSS MiB':>15s}")
            for name in ("lorabooth", "diffusers"):
                print(f"{name:12s}{r[name]['s_per_step']:>10.3f}{r[name]['peak_rss_mib']:>15.0f}")
            print(f"{'ratio':12s}{r['ratio']['time']:>10.2f}{r['ratio']['memory']:>15.2f}   (lorabooth / diffusers)\n")
        else:
            print("part 1 skipped: pass --diffusers-script PATH to compare with diffusers' trainer\n")
    if args.sd15_steps > 0:
        print("part 2: SD-1.5 architecture, 512x512, batch 1 + 1 prior, r=16 UNet + TE LoRA, grad checkpointing",
              flush=True)
        r = part2(args)
        report["sd15"] = r
        for k, v in r.items():
            print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
