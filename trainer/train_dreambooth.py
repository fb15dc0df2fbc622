"""DreamBooth fine-tuning of a Stable-Diffusion-style pipeline: LoRA (``--use_lora``) or full.

Run it any of these ways (same flags as PEFT's and diffusers' DreamBooth examples):

    accelerate launch trainer/train_dreambooth.py --use_lora --pretrained_model_name_or_path ... \
        --instance_data_dir ... --instance_prompt "a photo of sks dog" --output_dir out
    python -m lorabooth.trainer.train_dreambooth --config run.toml
    lorabooth train --help

Read top to bottom: flags -> input checks -> class images -> models -> adapters -> optimiser ->
resume -> loop (loss, checkpoints, validation) -> final adapter files and model card.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    # Run as a plain script file (`accelerate launch trainer/train_dreambooth.py`): our folder must not
    # shadow installed packages, and imports are absolute through the `lorabooth` root.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import torch
import torch.nn.functional as F
from lorabooth.trainer import lora
from lorabooth.trainer.args import (
    TEXT_ENCODER_TARGETS,
    ConfigError,
    atomic_write_text,
    parse_args,
    update_steps,
    write_resolved_config,
)
from lorabooth.trainer.checkpoint import load_checkpoint, replace_dir, resolve_resume, save_checkpoint
from lorabooth.trainer.checks import check_inputs, list_images
from lorabooth.trainer.data import BatchOrder, DreamBoothData, MicroBatches, tokenize

logger = logging.getLogger("lorabooth.trainer")
TRAIN_LOG_NAME = "train_log.jsonl"


@dataclass
class TrainResult:
    """What a run did: per-step losses (index 0 = step start_step + 1) and where its files are."""

    output_dir: Path
    start_step: int
    global_step: int
    losses: list[float] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    stopped_early: bool = False
    # dtype of frozen vs trainable UNet weights, e.g. {"frozen": "torch.bfloat16", "trainable": "torch.float32"}
    dtypes: dict[str, str] = field(default_factory=dict)


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint the current step and exit cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> _StopFlag:
        if hasattr(signal, "SIGTERM") and _in_main_thread():
            self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, *_: object) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _weight_dtype(mixed_precision: str) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


def _load_models(args: argparse.Namespace):
    """Tokenizer, noise scheduler, text encoder, VAE and UNet of the base pipeline."""
    import transformers
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoConfig, AutoTokenizer

    path, rev = args.pretrained_model_name_or_path, args.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            args.tokenizer_name or path, subfolder=None if args.tokenizer_name else "tokenizer", revision=rev
        )
        noise_scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", revision=rev)
        te_config = AutoConfig.from_pretrained(path, subfolder="text_encoder", revision=rev)
        te_class = getattr(transformers, (te_config.architectures or ["CLIPTextModel"])[0])
        text_encoder = te_class.from_pretrained(path, subfolder="text_encoder", revision=rev)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", revision=rev)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", revision=rev)
    except OSError as exc:
        raise ConfigError(f"--pretrained_model_name_or_path {path}: cannot load the pipeline ({exc})") from None
    return tokenizer, noise_scheduler, text_encoder, vae, unet


def enable_gradient_checkpointing(unet, text_encoder=None) -> None:
    """Recompute activations in backward for the UNet and, when it trains, the text encoder.

    The text encoder uses non-reentrant checkpointing: the reentrant kind silently drops the grads
    of LoRA weights inside a checkpointed block whose inputs (frozen embeddings) need no grad.
    """
    unet.enable_gradient_checkpointing()
    if text_encoder is None:
        return
    if hasattr(text_encoder, "activation_checkpointing_enable"):  # transformers >= 5 renamed it
        text_encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _lora_targets(spec: str) -> list[str]:
    return [t.strip() for t in spec.split(",") if t.strip()]


def _class_images(args: argparse.Namespace, accelerator, weight_dtype: torch.dtype) -> list[Path]:
    """Generate missing class images on the main process; every process then lists them."""
    from lorabooth.trainer.class_images import generate_class_images

    class_dir = Path(args.class_data_dir)
    if accelerator.is_main_process:
        precision = args.prior_generation_precision
        if precision is None:
            dtype = torch.float16 if accelerator.device.type == "cuda" else torch.float32
        else:
            dtype = {"fp32": torch.float32, "no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        made = generate_class_images(
            args.pretrained_model_name_or_path, class_dir, args.class_prompt, args.num_class_images,
            resolution=args.resolution, sample_batch_size=args.sample_batch_size, seed=args.seed,
            revision=args.revision, dtype=dtype, device=accelerator.device,
            num_inference_steps=args.num_inference_steps, show_progress=True,
        )
        if made:
            logger.info("generated %d class images in %s", made, class_dir)
    accelerator.wait_for_everyone()
    return list_images(class_dir, "--class_data_dir")[: args.num_class_images]


def train(args: argparse.Namespace) -> TrainResult:
    """Run one DreamBooth training job described by parsed flags (see ``parse_args``)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import compute_snr
    from tqdm.auto import tqdm

    output_dir = Path(args.output_dir)
    instance_images, _vae_factor = check_inputs(args)  # every bad input fails here, before any weight loads
    report_to = None if args.report_to in (None, "", "none") else args.report_to
    # Several processes but no GPU (torchrun, `accelerate launch --multi_gpu` on a CPU box): gloo on CPU.
    on_cpu_cluster = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=on_cpu_cluster,
        gradient_accumulation_steps=1,  # we accumulate ourselves: exact resume needs the step count in our hands
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir)),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logger.setLevel(logging.WARNING)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_resolved_config(args, output_dir)
    accelerator.wait_for_everyone()
    weight_dtype = _weight_dtype(accelerator.mixed_precision)
    class_images = _class_images(args, accelerator, weight_dtype) if args.with_prior_preservation else []

    # ---- models ---------------------------------------------------------------------------------
    tokenizer, noise_scheduler, text_encoder, vae, unet = _load_models(args)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ConfigError(f"scheduler prediction_type {prediction_type!r} is not supported (epsilon, v_prediction)")
    scaling = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    train_te = args.train_text_encoder
    vae.requires_grad_(False)
    unet.requires_grad_(not args.use_lora)
    text_encoder.requires_grad_(train_te and not args.use_lora)
    device = accelerator.device
    vae.to(device, dtype=weight_dtype)
    # Frozen weights live in half precision; whatever trains stays fp32 (GradScaler refuses fp16 grads).
    unet.to(device, dtype=weight_dtype if args.use_lora else torch.float32)
    te_dtype = torch.float32 if (train_te and not args.use_lora) else weight_dtype
    text_encoder.to(device, dtype=te_dtype)
    if args.enable_xformers_memory_efficient_attention:
        unet.enable_xformers_memory_efficient_attention()

    torch.manual_seed(args.seed)  # LoRA A init (Kaiming-uniform) is part of the run's seed
    configs: dict[str, object] = {}
    if args.use_lora:
        configs["unet"] = lora.add_lora(
            unet, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
            targets=_lora_targets(args.lora_target_modules), bias=args.lora_bias,
        )
        if train_te:
            configs["text_encoder"] = lora.add_lora(
                text_encoder, r=args.lora_text_encoder_r, alpha=args.lora_text_encoder_alpha,
                dropout=args.lora_text_encoder_dropout,
                targets=_lora_targets(args.lora_text_encoder_target_modules or TEXT_ENCODER_TARGETS),
                bias=args.lora_text_encoder_bias,
            )
        for model in (unet, text_encoder):
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.to(torch.float32)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(unet, text_encoder if train_te else None)

    # ---- optimiser and schedule -----------------------------------------------------------------
    params = lora.trainable_parameters(unet) + (lora.trainable_parameters(text_encoder) if train_te else [])
    if not params:
        raise ConfigError("nothing to train: no parameter requires grad (check --lora_target_modules)")
    lr = args.learning_rate
    if args.scale_lr:
        lr *= args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes
    if args.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError("--use_8bit_adam needs bitsandbytes: `pip install bitsandbytes`") from None
        opt_class = bnb.optim.AdamW8bit
    else:
        opt_class = torch.optim.AdamW
    optimizer = opt_class(
        params, lr=lr, betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )

    data = DreamBoothData(instance_images, class_images, args.resolution, args.center_crop, args.seed)
    order = BatchOrder(len(data), args.train_batch_size, accelerator.num_processes, accelerator.process_index, args.seed)
    updates_per_epoch, num_epochs = update_steps(order.batches_per_epoch, args)
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps,
        num_training_steps=args.max_train_steps, num_cycles=args.lr_num_cycles, power=args.lr_power,
    )
    # The schedule is stepped once per optimiser step by us (accelerate's wrapper would step it
    # num_processes times), and saved with the checkpoint.
    accelerator.register_for_checkpointing(lr_scheduler)

    if train_te:
        unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)
    else:
        unet, optimizer = accelerator.prepare(unet, optimizer)
    trained = [unet, text_encoder] if train_te else [unet]

    def unwrap(model):
        return accelerator.unwrap_model(model)

    if args.use_lora:
        _register_adapter_hooks(accelerator, unwrap, configs)

    # ---- text and latent caches -----------------------------------------------------------------
    prompt_ids = torch.cat([tokenize(tokenizer, args.instance_prompt)]
                           + ([tokenize(tokenizer, args.class_prompt)] if args.with_prior_preservation else []))
    prompt_ids = prompt_ids.to(device)
    cached_embeddings = None
    if args.pre_compute_text_embeddings:
        with torch.no_grad():
            cached_embeddings = text_encoder(prompt_ids)[0]
        text_encoder = None
    latent_cache: dict[tuple[bool, int], tuple[torch.Tensor, torch.Tensor]] = {}
    if args.cache_latents:
        with torch.no_grad():
            for is_class, paths in ((False, data.instance_images), (True, data.class_images)):
                for k, path in enumerate(paths):
                    px = data.pixels(path, k, 0, is_class).unsqueeze(0).to(device, dtype=weight_dtype)
                    dist = vae.encode(px).latent_dist
                    latent_cache[(is_class, k)] = (dist.mean[0], dist.std[0])
        vae = vae.to("cpu")

    # ---- resume ---------------------------------------------------------------------------------
    generator = torch.Generator(device=device).manual_seed(args.seed * 1000 + accelerator.process_index)
    resume_path = resolve_resume(output_dir, args.resume_from_checkpoint)
    global_step = 0
    if args.resume_from_checkpoint and resume_path is None:
        logger.info("--resume_from_checkpoint latest: no checkpoint in %s yet, starting a new run", output_dir)
    if resume_path is not None:
        global_step = load_checkpoint(accelerator, resume_path, generator)
        logger.info("Resuming from checkpoint %s (step %d)", resume_path.name, global_step)
    start_step = global_step
    if report_to:
        accelerator.init_trackers("dreambooth-lora" if args.use_lora else "dreambooth",
                                  config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})

    # ---- one optimiser step ---------------------------------------------------------------------
    accum = args.gradient_accumulation_steps
    num_timesteps = noise_scheduler.config.num_train_timesteps
    with_prior = args.with_prior_preservation

    def encode_latents(batch) -> torch.Tensor:
        if latent_cache:
            keys = [(False, int(k)) for k in batch["instance_index"]]
            if with_prior:
                keys += [(True, int(k)) for k in batch["class_index"]]
            mean = torch.stack([latent_cache[k][0] for k in keys])
            std = torch.stack([latent_cache[k][1] for k in keys])
        else:
            with torch.no_grad():
                dist = vae.encode(batch["pixel_values"].to(device, dtype=weight_dtype)).latent_dist
            mean, std = dist.mean, dist.std
        eps = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype)
        return ((mean + std * eps) - shift) * scaling

    def compute_loss(batch) -> torch.Tensor:
        latents = encode_latents(batch)
        bsz = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
        if args.noise_offset:
            noise = noise + args.noise_offset * torch.randn(
                (bsz, latents.shape[1], 1, 1), generator=generator, device=device, dtype=latents.dtype)
        timesteps = torch.randint(0, num_timesteps, (bsz,), generator=generator, device=device).long()
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        # Encode each distinct prompt once, then spread it over the batch.
        n = len(batch["instance_index"])
        rows = torch.tensor([0] * n + ([1] * n if with_prior else []), device=device)
        if cached_embeddings is not None:
            states = cached_embeddings[rows]
        else:
            states = text_encoder(prompt_ids)[0][rows]
        pred = unet(noisy, timesteps, states, return_dict=False)[0]
        target = noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if args.snr_gamma is not None:
            snr = compute_snr(noise_scheduler, timesteps)
            weight = torch.clamp(snr, max=args.snr_gamma) / (snr if prediction_type == "epsilon" else snr + 1)
            per_sample = per_sample * weight
        if with_prior:
            return per_sample[:n].mean() + args.prior_loss_weight * per_sample[n:].mean()
        return per_sample.mean()

    # ---- validation -----------------------------------------------------------------------------
    validation_images: list[Path] = []

    def validate(step: int) -> None:
        nonlocal validation_images
        if not args.validation_prompt or not accelerator.is_main_process:
            return
        from lorabooth.trainer.validation import build_pipeline, log_images, sample_images, save_png

        for model in trained:
            model.eval()
        pipe = build_pipeline(
            args.pretrained_model_name_or_path, args.revision, unwrap(unet),
            unwrap(text_encoder) if text_encoder is not None else None, vae.to(device), tokenizer, weight_dtype,
        )
        with accelerator.autocast():
            images = sample_images(pipe, args.validation_prompt, args.num_validation_images, seed=args.seed,
                                   resolution=args.resolution, steps=args.num_inference_steps, device=device)
        validation_images = [save_png(img, output_dir / "validation" / f"step-{step:06d}-{i}.png")
                             for i, img in enumerate(images)]
        log_images(accelerator, images, step)
        for model in trained:
            model.train()
        del pipe

    # ---- the loop -------------------------------------------------------------------------------
    result = TrainResult(output_dir=output_dir, start_step=start_step, global_step=global_step)
    for p in unwrap(unet).parameters():
        result.dtypes.setdefault("trainable" if p.requires_grad else "frozen", str(p.dtype))
    for model in trained:
        model.train()
    if args.validation_at_start and global_step == 0:
        validate(0)
    progress = tqdm(range(args.max_train_steps), initial=global_step, desc="Steps",
                    disable=not accelerator.is_local_main_process)
    logger.info("%d images x %d epochs, %d optimiser steps (%d per epoch), %d process(es)",
                len(data), num_epochs, args.max_train_steps, updates_per_epoch, accelerator.num_processes)
    batches = iter(torch.utils.data.DataLoader(
        MicroBatches(data, order, with_prior, global_step * accum, args.max_train_steps * accum),
        batch_size=None, shuffle=False, num_workers=args.num_dataloader_workers,
        # Its own generator: otherwise creating the iterator draws from the global RNG (dropout's),
        # at a different point in a resumed run than in an uninterrupted one.
        generator=torch.Generator().manual_seed(args.seed),
    ))
    # One JSON line per optimiser step (appended across resumes; the last line for a step wins).
    loss_log = open(output_dir / TRAIN_LOG_NAME, "a", encoding="utf-8") if accelerator.is_main_process else None
    with _StopFlag() as stop, (loss_log or contextlib.nullcontext()):
        while global_step < args.max_train_steps:
            step_loss = 0.0
            for j in range(accum):
                batch = next(batches)
                with contextlib.ExitStack() as sync_ctx:
                    if j < accum - 1:
                        for model in trained:
                            sync_ctx.enter_context(accelerator.no_sync(model))
                    with accelerator.autocast():
                        loss = compute_loss(batch)
                    accelerator.backward(loss / accum)
                step_loss += loss.detach().item() / accum
            accelerator.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            result.losses.append(step_loss)
            progress.update(1)
            logs = {"loss": step_loss, "lr": lr_scheduler.get_last_lr()[0]}
            progress.set_postfix(loss=f"{step_loss:.4f}", lr=f"{logs['lr']:.2e}")
            accelerator.log(logs, step=global_step)
            if loss_log is not None:
                loss_log.write(json.dumps({"step": global_step, **logs}) + "\n")
                loss_log.flush()
            stopping = stop.requested and global_step < args.max_train_steps
            if global_step % args.checkpointing_steps == 0 or stopping:
                path = save_checkpoint(accelerator, output_dir, global_step, generator, args.checkpoints_total_limit)
                logger.info("Saved state to %s", path)
            if global_step % args.validation_steps == 0:
                validate(global_step)
            if stopping:
                logger.info("stop requested: checkpointed step %d; resume with --resume_from_checkpoint latest",
                            global_step)
                result.stopped_early = True
                break
    progress.close()
    result.global_step = global_step

    # ---- final files ----------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and not result.stopped_early:
        result.files = _write_outputs(args, output_dir, unwrap(unet),
                                      unwrap(text_encoder) if (train_te and text_encoder is not None) else None,
                                      configs, validation_images)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if accelerator.num_processes == 1:
        # accelerate's state is a process-wide singleton; forget it so another run in this process
        # (tests, the demo, the app) may choose a different precision or device.
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    return result


def _register_adapter_hooks(accelerator, unwrap, configs: dict[str, object]) -> None:
    """Checkpoint only the adapters (PEFT folders), never a copy of the frozen base."""
    from transformers import PreTrainedModel

    def component(model) -> str:
        return "text_encoder" if isinstance(unwrap(model), PreTrainedModel) else "unet"

    def save_hook(models, weights, output_dir):
        for model in models:
            if accelerator.is_main_process:
                name = component(model)
                lora.save_peft_folder(Path(output_dir) / name, unwrap(model), configs[name])
            if weights:
                weights.pop()  # accelerate must not write the full model

    def load_hook(models, input_dir):
        while models:
            model = models.pop()
            lora.load_peft_folder(Path(input_dir) / component(model), unwrap(model))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _write_outputs(args, output_dir: Path, unet, text_encoder, configs, validation_images) -> dict[str, Path]:
    """Adapters in PEFT and diffusers layout (or the full pipeline), then the model card."""
    from lorabooth.trainer.model_card import model_card

    files: dict[str, Path] = {}
    if args.use_lora:
        from lorabooth.adapters.formats.diffusers_format import WEIGHTS_NAME, write_diffusers
        from lorabooth.adapters.formats.peft_format import read_peft

        files["unet"] = lora.save_peft_folder(output_dir / "unet", unet, configs["unet"])
        if text_encoder is not None:
            files["text_encoder"] = lora.save_peft_folder(output_dir / "text_encoder", text_encoder,
                                                          configs["text_encoder"])
        # the single diffusers file is written from the PEFT folders just saved: one converter for all files
        files["diffusers"] = write_diffusers(read_peft(output_dir), output_dir / WEIGHTS_NAME)[0]
    else:
        files.update(_save_full_pipeline(args, output_dir, unet, text_encoder))
    files["config"] = write_resolved_config(args, output_dir)
    readme = output_dir / "README.md"
    atomic_write_text(readme, model_card(args, validation_images, output_dir))
    files["model_card"] = readme
    return files


def _save_full_pipeline(args, output_dir: Path, unet, text_encoder) -> dict[str, Path]:
    """Full fine-tuning: the trained UNet (and text encoder) replace the base's, saved as a pipeline."""
    import tempfile

    from diffusers import StableDiffusionPipeline

    kwargs = {"unet": unet.to(torch.float32)}
    if text_encoder is not None:
        kwargs["text_encoder"] = text_encoder.to(torch.float32)
    pipe = StableDiffusionPipeline.from_pretrained(
        args.pretrained_model_name_or_path, revision=args.revision, safety_checker=None,
        requires_safety_checker=False, **kwargs,
    )
    out: dict[str, Path] = {}
    tmp = Path(tempfile.mkdtemp(prefix=".pipeline.", suffix=".tmp", dir=output_dir))
    pipe.save_pretrained(str(tmp))
    for child in sorted(tmp.iterdir()):
        replace_dir(child, output_dir / child.name) if child.is_dir() else os.replace(child, output_dir / child.name)
        out[child.name] = output_dir / child.name
    tmp.rmdir()
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: returns 0 on success, 2 on a bad flag or input (message on stderr)."""
    from lorabooth.trainer.launch import relaunch_cpu_processes, requested_cpu_processes

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
        wanted = requested_cpu_processes()
        if wanted:
            return relaunch_cpu_processes(wanted, argv)
        result = train(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.files:
        print(f"adapter written to {result.output_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

