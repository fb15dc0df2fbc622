#!/usr/bin/env python
"""Train the shapes-world text-to-image model shipped in assets/world-model/.

The recipe, top to bottom (seeded; every stage checkpoints into --work_dir and `--resume` skips
what is done and continues the UNet from its last checkpoint):

1. dataset  render --n_images pre-training scenes of lorabooth.world (no patterns, no held-out combos)
2. vae      a small AutoencoderKL (64x64x3 -> 16x16x4), MSE + a tiny KL term; its scaling_factor is
            set from the standard deviation of the cached latents, as SD's 0.18215 was
3. latents  encode the whole dataset once (posterior means)
4. unet     UNet2DConditionModel (SD 1.x block types, so module names match) trained jointly with a
            small CLIPTextModel: epsilon prediction, DDPM scaled_linear schedule, min-SNR weighting,
            10% empty captions for classifier-free guidance, AdamW, EMA of both
5. export   a StableDiffusionPipeline folder (EMA weights, DPM-Solver++ scheduler, safetensors)

Batches, noise and captions of step k come from a generator seeded with (seed, k), so a resumed run
sees the same data as an uninterrupted one. Uses CUDA when present; the recipe does not depend on it.

    python scripts/train_world_model.py --out assets/world-model --work_dir runs/world
    python scripts/train_world_model.py --resume ...            # continue after a kill
    python scripts/train_world_model.py --export_only ...       # export the latest checkpoint now
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from lorabooth.adapters.serialization import atomic_write, atomic_write_text
from lorabooth.world.generator import pretraining_caption, pretraining_dataset, random_scene, render
from lorabooth.world.tokenizer import build_tokenizer
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

# Downsampling factor 4: 64x64x3 images <-> 16x16x4 latents. Purely convolutional (no mid-block
# attention) so it can be trained on 32x32 crops, four times cheaper, and still serve full images.
VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
    block_out_channels=(16, 32, 64), norm_num_groups=8, mid_block_add_attention=False,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
)
# SD 1.x block types (same module names: to_q/to_k/to_v/to_out.0, proj_in, conv1, ...). Attention
# runs at 8x8 and 4x4 latents only: at 16x16 it cost most of the step time on this CPU.
UNET_CONFIG = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(32, 64, 128), norm_num_groups=16, cross_attention_dim=128, attention_head_dim=8,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
TEXT_CONFIG = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
    max_position_embeddings=77, projection_dim=128,
)
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon", clip_sample=False, steps_offset=1)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def save_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def save_array(path: Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a bare temp name
            np.save(fh, array)

    atomic_write(path, write)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, tmp))


def step_generator(seed: int, step: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(seed * 1_000_003 + step)


# ----------------------------------------------------------------------------- stage 1: dataset
def make_dataset(work: Path, n: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    images_path, scenes_path = work / "images.npy", work / "scenes.json"
    if images_path.exists() and scenes_path.exists():
        return np.load(images_path), json.loads(scenes_path.read_text())
    t0 = time.time()
    images = np.empty((n, 64, 64, 3), np.uint8)
    scenes = []
    for i, (img, scene) in enumerate(pretraining_dataset(n, seed=seed)):
        images[i] = np.asarray(img)
        scenes.append(scene.to_dict())
    save_array(images_path, images)
    save_json(scenes_path, scenes)  # type: ignore[arg-type]
    log(f"dataset: {n} images in {time.time() - t0:.0f}s")
    return images, scenes


def make_codec_extras(work: Path, n: int, seed: int) -> np.ndarray:
    """Images with patterns and held-out combinations: the VAE is a codec for the whole world (DreamBooth
    subjects must survive encoding), even though the text-to-image model never sees these in pre-training."""
    path = work / "codec_extras.npy"
    if path.exists():
        return np.load(path)
    rng = np.random.default_rng(seed + 7)
    extras = np.stack([np.asarray(render(random_scene(rng))) for _ in range(n)])
    save_array(path, extras)
    return extras


def to_pixels(batch: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# ----------------------------------------------------------------------------- stage 2: vae
def train_vae(work: Path, images: np.ndarray, args, device: str) -> AutoencoderKL:
    path = work / "vae"
    if (path / "config.json").exists():
        return AutoencoderKL.from_pretrained(path).to(device)
    images = np.concatenate([images, make_codec_extras(work, args.n_images // 3, args.seed)])
    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**VAE_CONFIG).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    t0, step = time.time(), 0
    while step < args.vae_steps and time.time() - t0 < args.vae_max_minutes * 60:
        for group in opt.param_groups:  # cosine decay to 10%: the last steps polish colours and edges
            group["lr"] = args.vae_lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / args.vae_steps)))
        g = step_generator(args.seed + 1, step)
        idx = torch.randint(0, len(images), (args.vae_batch_size,), generator=g).numpy()
        oy, ox = (int(v) * 4 for v in torch.randint(0, 9, (2,), generator=g))  # 32x32 crop on the latent grid
        x = to_pixels(np.ascontiguousarray(images[idx, oy : oy + 32, ox : ox + 32]), device)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)
        recon = vae.decode(z).sample
        kl = post.kl().mean() / x[0].numel()
        loss = F.mse_loss(recon, x) + F.l1_loss(recon, x) + args.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            log(f"vae step {step} loss {loss.item():.4f} mse {F.mse_loss(recon, x).item():.5f} "
                f"({(time.time() - t0) / step:.2f}s/step)")
    log(f"vae: {step} steps in {(time.time() - t0) / 60:.1f} min")
    vae.eval()
    with torch.no_grad():  # SD's convention: scale latents to unit variance for the UNet
        x = to_pixels(images[:512], device)
        std = torch.cat([vae.encode(x[i : i + 128]).latent_dist.mean for i in range(0, 512, 128)]).std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    tmp = work / "vae.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp, safe_serialization=True)
    os.replace(tmp, path)
    log(f"vae saved; latent std {std:.4f} -> scaling_factor {1 / std:.4f}")
    return vae


def polish_decoder(work: Path, images: np.ndarray, latents: torch.Tensor, args, device: str) -> AutoencoderKL:
    """Train the decoder alone on cached latents (encoder frozen, so the UNet's latents stay valid).

    Independent of the UNet stage: it may run after it, or beside it in a second process
    (`--polish_decoder_only`); the export takes the polished decoder when it exists.
    """
    path = work / "vae_polished"
    if (path / "config.json").exists():
        return AutoencoderKL.from_pretrained(path).to(device)
    vae = AutoencoderKL.from_pretrained(work / "vae").to(device)
    extras = make_codec_extras(work, args.n_images // 3, args.seed)
    extra_latents = cache_latents(work, vae, extras, device, name="codec_extras_latents.safetensors")
    images = np.concatenate([images, extras])
    latents = torch.cat([latents, extra_latents]) / vae.config.scaling_factor
    vae.requires_grad_(False)
    decoder = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p_ in decoder:
        p_.requires_grad_(True)
    opt = torch.optim.AdamW(decoder, lr=args.polish_lr, weight_decay=0.0)
    t0, step = time.time(), 0
    while step < args.polish_steps and time.time() - t0 < args.polish_max_minutes * 60:
        for group in opt.param_groups:
            group["lr"] = args.polish_lr * (0.05 + 0.475 * (1 + math.cos(math.pi * step / args.polish_steps)))
        g = step_generator(args.seed + 4, step)
        idx = torch.randint(0, len(images), (args.vae_batch_size,), generator=g)
        oy, ox = (int(v) for v in torch.randint(0, 9, (2,), generator=g))  # in latent cells (4 px)
        x = to_pixels(np.ascontiguousarray(images[idx.numpy(), 4 * oy : 4 * oy + 32, 4 * ox : 4 * ox + 32]), device)
        z = latents[idx, :, oy : oy + 8, ox : ox + 8].to(device)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + F.l1_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder, 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            log(f"decoder polish step {step} loss {loss.item():.4f} mse {F.mse_loss(recon, x).item():.5f} "
                f"({(time.time() - t0) / step:.2f}s/step)")
    vae.eval()
    _save_vae(vae, path)
    log(f"decoder polished: {step} steps in {(time.time() - t0) / 60:.1f} min")
    return vae


def _save_vae(vae: AutoencoderKL, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- stage 3: latents
@torch.no_grad()
def cache_latents(work: Path, vae: AutoencoderKL, images: np.ndarray, device: str,
                  name: str = "latents.safetensors") -> torch.Tensor:
    path = work / name
    if path.exists():
        return load_file(str(path))["latents"]
    t0 = time.time()
    vae.eval()
    out = [vae.encode(to_pixels(images[i : i + 256], device)).latent_dist.mean.cpu()
           for i in range(0, len(images), 256)]
    latents = torch.cat(out) * vae.config.scaling_factor
    save_tensors(path, {"latents": latents})
    log(f"latents: {tuple(latents.shape)} std {latents.std():.3f} in {time.time() - t0:.0f}s")
    return latents


# ----------------------------------------------------------------------------- stage 4: unet + text encoder
def build_text_encoder(tokenizer) -> CLIPTextModel:
    cfg = CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TEXT_CONFIG)
    return CLIPTextModel(cfg)


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)


def unet_checkpoint_paths(work: Path) -> dict[str, Path]:
    ck = work / "unet_ckpt"
    return {"dir": ck, "models": ck / "models.safetensors", "optim": ck / "optimizer.pt", "state": ck / "state.json"}


def save_unet_checkpoint(work: Path, step: int, unet, te, ema_unet, ema_te, opt) -> None:
    paths = unet_checkpoint_paths(work)
    paths["dir"].mkdir(exist_ok=True)
    tensors = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    tensors |= {f"text_encoder.{k}": v for k, v in te.state_dict().items()}
    tensors |= {f"ema_unet.{k}": v for k, v in ema_unet.state_dict().items()}
    tensors |= {f"ema_text_encoder.{k}": v for k, v in ema_te.state_dict().items()}
    save_tensors(paths["models"], tensors)
    state = opt.state_dict()
    atomic_write(paths["optim"], lambda tmp: torch.save(state, tmp))
    save_json(paths["state"], {"step": step})  # written last: a checkpoint counts only when this exists


def load_unet_checkpoint(work: Path, unet, te, ema_unet, ema_te, opt) -> int:
    paths = unet_checkpoint_paths(work)
    if not paths["state"].exists():
        return 0
    tensors = load_file(str(paths["models"]))
    for prefix, module in (("unet.", unet), ("text_encoder.", te), ("ema_unet.", ema_unet),
                           ("ema_text_encoder.", ema_te)):
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if opt is not None:
        opt.load_state_dict(torch.load(paths["optim"], weights_only=True))
    return json.loads(paths["state"].read_text())["step"]


def init_from_export(folder: Path, unet, te, ema_unet, ema_te) -> int:
    """Start the UNet stage from an exported model folder (its EMA weights; a fresh optimizer).

    This is how a later session continues a run whose checkpoint directory is gone: the committed
    assets/world-model holds everything else (VAE, tokenizer) and training_state.json the step.
    """
    state_path = folder / "training_state.json"
    if not state_path.exists():
        raise SystemExit(f"error: --init_from {folder} has no training_state.json; export with this script first")
    u = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    t = load_file(str(folder / "text_encoder" / "model.safetensors"))
    for module, sd in ((unet, u), (ema_unet, u), (te, t), (ema_te, t)):
        missing, unexpected = module.load_state_dict(sd, strict=False)
        if [k for k in missing if "position_ids" not in k] or unexpected:
            raise SystemExit(f"error: {folder} does not match this recipe's model configs "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    step = int(json.loads(state_path.read_text())["unet_steps_done"])
    log(f"initialised from {folder} at step {step}")
    return step


def unet_lr(step: int, warm_from: int, args) -> float:
    """Warmup, a constant plateau, then a cosine decay to 5% over the last --decay_fraction of the steps.

    The decay is what turns a noisy plateau into a sharp model: the EMA alone averages the noise of a
    constant learning rate but cannot remove it (warmup-stable-decay, as in Hu et al. 2024's MiniCPM).
    """
    lr = args.lr * min(1.0, (step - warm_from + 1) / args.warmup_steps)
    decay_start = args.unet_steps * (1.0 - args.decay_fraction)
    if args.decay_fraction > 0 and step >= decay_start:
        progress = min(1.0, (step - decay_start) / (args.unet_steps - decay_start))
        lr *= 0.05 + 0.475 * (1 + math.cos(math.pi * progress))
    return lr


def train_unet(work: Path, latents: torch.Tensor, scenes: list[dict], tokenizer, args, device: str):
    from lorabooth.world.generator import Scene

    scene_objs = [Scene(**s) for s in scenes]
    torch.manual_seed(args.seed + 2)
    unet = UNet2DConditionModel(**UNET_CONFIG).to(device)
    te = build_text_encoder(tokenizer).to(device)
    ema_unet, ema_te = copy.deepcopy(unet).eval(), copy.deepcopy(te).eval()
    for p in list(ema_unet.parameters()) + list(ema_te.parameters()):
        p.requires_grad_(False)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2, betas=(0.9, 0.99))
    start = load_unet_checkpoint(work, unet, te, ema_unet, ema_te, opt) if args.resume else 0
    warm_from = 0
    if start == 0 and args.init_from:
        start = init_from_export(Path(args.init_from), unet, te, ema_unet, ema_te)
        warm_from = start  # fresh optimizer moments: warm the learning rate up again
    n_unet = sum(p.numel() for p in unet.parameters())
    n_te = sum(p.numel() for p in te.parameters())
    log(f"unet {n_unet / 1e6:.2f}M params, text encoder {n_te / 1e6:.2f}M params; starting at step {start}")
    sched = DDPMScheduler(**SCHEDULE)
    alphas_cumprod = sched.alphas_cumprod.to(device)
    snr_all = alphas_cumprod / (1 - alphas_cumprod)
    unet.train()
    te.train()
    t0, t_ckpt, step = time.time(), time.time(), start
    loss_avg = None
    while step < args.unet_steps:
        if time.time() - t0 > args.unet_max_minutes * 60:
            log(f"unet: time limit {args.unet_max_minutes} min reached at step {step}")
            break
        lr = unet_lr(step, warm_from, args)
        for group in opt.param_groups:
            group["lr"] = lr
        g = step_generator(args.seed + 3, step)
        idx = torch.randint(0, len(latents), (args.batch_size,), generator=g)
        rng = np.random.default_rng([args.seed, step])
        captions = [pretraining_caption(scene_objs[i], rng) for i in idx.tolist()]
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        x0 = latents[idx].to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        if args.noise_offset:
            # A 16x16 latent's mean leaks through the schedule's last step (sqrt(alpha_bar_T) = 0.068 of the
            # image's mean vs 1/16 of noise): without an offset the model reads the background colour from
            # the starting noise instead of the prompt. A per-channel offset hides that leak (Guttenberg 2023).
            noise = noise + args.noise_offset * torch.randn((x0.shape[0], x0.shape[1], 1, 1), generator=g).to(device)
        t = torch.randint(0, SCHEDULE["num_train_timesteps"], (args.batch_size,), generator=g).to(device)
        xt = sched.add_noise(x0, noise, t)
        cond = te(ids)[0]
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        # min-SNR-5 weighting (Hang et al. 2023): converges several times faster for epsilon targets.
        snr = snr_all[t]
        weight = torch.clamp(snr, max=5.0) / snr
        loss = (weight * F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_te, te, decay)
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % 25 == 0:
            rate = (time.time() - t0) / (step - start)
            log(f"unet step {step}/{args.unet_steps} loss {loss_avg:.4f} lr {lr:.2e} ({rate:.2f}s/step, "
                f"eta {rate * (args.unet_steps - step) / 60:.0f} min)")
        if time.time() - t_ckpt > args.checkpoint_minutes * 60 or step == args.unet_steps:
            save_unet_checkpoint(work, step, unet, te, ema_unet, ema_te, opt)
            t_ckpt = time.time()
            log(f"checkpoint at step {step}")
    save_unet_checkpoint(work, step, unet, te, ema_unet, ema_te, opt)
    return ema_unet, ema_te, step


# ----------------------------------------------------------------------------- stage 5: export
def export(out: Path, vae, ema_unet, ema_te, tokenizer, meta: dict) -> None:
    scheduler = DPMSolverMultistepScheduler(**{k: v for k, v in SCHEDULE.items() if k != "clip_sample"})
    pipe = StableDiffusionPipeline(
        vae=vae.cpu().eval(), text_encoder=ema_te.cpu().eval(), tokenizer=tokenizer, unet=ema_unet.cpu().eval(),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".export."))
    pipe.save_pretrained(tmp, safe_serialization=True)
    save_json(tmp / "training_state.json", meta)
    # Keep files we do not produce (the model card, the evaluator's weights) across re-exports.
    if out.exists():
        for item in out.iterdir():
            if not (tmp / item.name).exists():
                shutil.move(str(item), tmp / item.name)
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"exported {out} ({size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="assets/world-model", help="exported diffusers folder (model card and scores there are kept)")
    p.add_argument("--work_dir", default="runs/world", help="dataset, VAE, latents and UNet checkpoints; reuse it with --resume")
    p.add_argument("--seed", type=int, default=0, help="seeds the dataset, initialisation and every batch")
    p.add_argument("--n_images", type=int, default=20000, help="pre-training scenes rendered in stage 1")
    p.add_argument("--vae_steps", type=int, default=1200, help="VAE optimizer steps (stage 2)")
    p.add_argument("--vae_max_minutes", type=float, default=15, help="stop the VAE stage after this many minutes")
    p.add_argument("--vae_batch_size", type=int, default=32, help="images per VAE step")
    p.add_argument("--vae_lr", type=float, default=2e-3, help="VAE AdamW learning rate")
    p.add_argument("--vae_kl_weight", type=float, default=1e-4, help="weight of the KL term against the MSE")
    p.add_argument("--unet_steps", type=int, default=6000, help="UNet + text encoder optimizer steps (stage 4)")
    p.add_argument("--unet_max_minutes", type=float, default=115, help="stop the UNet stage after this many minutes (per sitting)")
    p.add_argument("--batch_size", type=int, default=64, help="latents per UNet step")
    p.add_argument("--lr", type=float, default=8e-4, help="peak AdamW learning rate of the UNet and text encoder")
    p.add_argument("--warmup_steps", type=int, default=200, help="linear learning-rate warmup steps")
    p.add_argument("--decay_fraction", type=float, default=0.3,
                   help="share of --unet_steps at the end over which the learning rate decays to 5%% (0: constant)")
    p.add_argument("--ema_decay", type=float, default=0.998, help="EMA decay of the exported UNet and text encoder")
    p.add_argument("--noise_offset", type=float, default=0.15,
                   help="std of a per-channel constant added to the UNet's noise, so backgrounds follow the prompt")
    p.add_argument("--checkpoint_minutes", type=float, default=5, help="minutes between UNet checkpoints")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --work_dir")
    p.add_argument("--export_only", action="store_true", help="export the latest UNet checkpoint and stop")
    p.add_argument("--init_from", default=None,
                   help="continue from an exported model folder (e.g. assets/world-model) when --work_dir has no "
                        "checkpoint: its VAE, EMA UNet and text encoder, and the step in training_state.json")
    p.add_argument("--polish_decoder_only", action="store_true",
                   help="only polish the VAE decoder (can run beside the UNet stage in a second process)")
    p.add_argument("--polish_steps", type=int, default=800, help="decoder-polish steps on cached latents after the UNet (0: skip)")
    p.add_argument("--polish_max_minutes", type=float, default=30, help="stop the decoder polish after this many minutes")
    p.add_argument("--polish_lr", type=float, default=1e-3, help="decoder-polish learning rate")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work, out = Path(args.work_dir), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    if not args.resume and not args.export_only and not args.polish_decoder_only and (work / "unet_ckpt" / "state.json").exists():
        print(f"error: {work} already holds a UNet checkpoint; pass --resume to continue it or choose another "
              f"--work_dir", file=sys.stderr)
        return 2
    save_json(work / ("args.polish.json" if args.polish_decoder_only else "args.json"), vars(args))
    log(f"device {device}, threads {torch.get_num_threads()}, args {vars(args)}")
    tokenizer = build_tokenizer(work / "tokenizer")
    t_start = time.time()
    images, scenes = make_dataset(work, args.n_images, args.seed)
    if args.init_from and not (work / "vae" / "config.json").exists():
        shutil.copytree(Path(args.init_from) / "vae", work / "vae")  # same VAE -> same latents
        log(f"VAE taken from {args.init_from}")
    vae = train_vae(work, images, args, device)
    latents = cache_latents(work, vae, images, device)
    if args.polish_decoder_only:
        polish_decoder(work, images, latents, args, device)
        return 0
    if (work / "vae_polished" / "config.json").exists():  # same encoder, better decoder
        vae = AutoencoderKL.from_pretrained(work / "vae_polished")
        log("export uses the polished decoder")
    if args.export_only:
        unet, te = UNet2DConditionModel(**UNET_CONFIG), build_text_encoder(tokenizer)
        ema_unet, ema_te = copy.deepcopy(unet), copy.deepcopy(te)
        step = load_unet_checkpoint(work, unet, te, ema_unet, ema_te, None)
        if step == 0:
            print(f"error: no UNet checkpoint in {work / 'unet_ckpt'}; train first", file=sys.stderr)
            return 2
    else:
        ema_unet, ema_te, step = train_unet(work, latents, scenes, tokenizer, args, device)
        if args.polish_steps > 0:
            vae = polish_decoder(work, images, latents, args, device)
    meta = {"unet_steps_done": step, "vae_decoder_polished": (work / "vae_polished" / "config.json").exists(), "unet_steps_planned": args.unet_steps, "seed": args.seed,
            "n_images": args.n_images, "batch_size": args.batch_size, "device": device,
            "this_run_minutes": round((time.time() - t_start) / 60, 1)}
    if args.export_only:  # no training happened here: keep the minutes of the run that trained it
        previous = out / "training_state.json"
        if previous.is_file():
            meta["this_run_minutes"] = json.loads(previous.read_text()).get("this_run_minutes")
    export(out, vae, ema_unet, ema_te, tokenizer, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
