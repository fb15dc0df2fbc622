"""What the app does, without the UI: one object the Gradio handlers and the API endpoints call.

``Booth`` owns the data folder, the job manager, the gallery and the preview engine. Every
method takes plain values, so it is tested directly and reused by ``gradio_client`` endpoints.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from lorabooth.app.gallery import Gallery, GalleryError
from lorabooth.app.jobs import JobError, JobManager
from lorabooth.app.mix import mix
from lorabooth.app.preview import PreviewEngine, PreviewRequest
from lorabooth.app.storage import DataDir, inside, safe_name
from lorabooth.app.uploads import save_images

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(os.environ.get("LORABOOTH_ASSETS") or REPO_ROOT / "assets")  # a Space bundle sets its own
WORLD_MODEL = ASSETS / "world-model"
DEMO_SUBJECT = ASSETS / "demo-subject"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"

# Flags the app sets itself; "extra flags" typed in the Advanced box may not override them,
# because they decide where files are written.
RESERVED_FLAGS = {"output_dir", "instance_data_dir", "class_data_dir", "logging_dir", "config", "resume_from_checkpoint"}

PRESETS: dict[str, dict[str, Any]] = {
    # A 16 GB T4: everything that saves memory on SD 1.5 at 512 px.
    "T4 16 GB": {
        "gradient_checkpointing": True, "mixed_precision": "fp16", "use_8bit_adam": True, "cache_latents": True,
        "resolution": 512, "train_batch_size": 1, "max_train_steps": 800, "learning_rate": 1e-4,
        "checkpointing_steps": 200, "validation_steps": 200, "num_validation_images": 2,
    },
    # The shipped 64 px world model on a laptop CPU: minutes, not hours.
    "CPU demo": {
        "gradient_checkpointing": False, "mixed_precision": "no", "use_8bit_adam": False, "cache_latents": True,
        "resolution": 64, "train_batch_size": 1, "max_train_steps": 150, "learning_rate": 1e-3,
        "checkpointing_steps": 50, "validation_steps": 50, "num_validation_images": 1,
    },
}


class BoothError(ValueError):
    """A request from the UI or API that cannot be done; the message is shown to the user."""


def default_base_model() -> str:
    return str(WORLD_MODEL) if (WORLD_MODEL / "model_index.json").exists() else SD15


def demo_subject() -> dict:
    """The shipped demo subject: its image folder and the prompts in ``subject.json``."""
    info = {"instance_prompt": "a photo of sks shape", "class_prompt": "a photo of shape"}
    meta = DEMO_SUBJECT / "subject.json"
    if meta.exists():
        info.update({k: v for k, v in json.loads(meta.read_text()).items() if isinstance(v, str | int | float)})
    images = DEMO_SUBJECT / "images" if (DEMO_SUBJECT / "images").is_dir() else DEMO_SUBJECT
    info["images_dir"] = str(images)
    return info


def parse_extra_flags(text: str) -> dict[str, Any]:
    """``--snr_gamma 5 --center_crop`` -> ``{"snr_gamma": "5", "center_crop": True}``; reserved flags refused."""
    out: dict[str, Any] = {}
    tokens = shlex.split(text or "")
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) < 3:
            raise BoothError(f"extra flags: expected --flag, got {tok!r}")
        key, _, inline = tok[2:].partition("=")
        if key in RESERVED_FLAGS:
            raise BoothError(f"extra flags: --{key} is set by the app and cannot be changed here")
        if inline:
            out[key] = inline
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            out[key] = tokens[i + 1]
            i += 1
        else:
            out[key] = True
        i += 1
    return out


class Booth:
    def __init__(
        self,
        data_dir: str | Path,
        *,
        base_model: str | None = None,
        trainer_module: str | None = None,
        start_jobs: bool = True,
        preview: PreviewEngine | None = None,
        demo: dict | None = None,
        job_env: dict[str, str] | None = None,
    ) -> None:
        self.data = DataDir(data_dir)
        self.base_model = base_model or default_base_model()
        self.gallery = Gallery(self.data)
        self.preview = preview or PreviewEngine()
        self.demo = demo or demo_subject()
        kwargs = {"trainer_module": trainer_module} if trainer_module else {}
        self.jobs = JobManager(self.data, on_finished=self._job_finished, start=start_jobs, extra_env=job_env, **kwargs)

    # ---- training --------------------------------------------------------------------------
    def train_params(self, form: dict[str, Any]) -> dict[str, Any]:
        """Trainer flags from the Train form's values (names are the trainer's flag names)."""
        params: dict[str, Any] = {
            "pretrained_model_name_or_path": form.get("base_model") or self.base_model,
            "instance_prompt": form.get("instance_prompt") or "",
            "use_lora": True,
            "report_to": "none",
        }
        if not params["instance_prompt"].strip():
            raise BoothError("instance prompt is empty: describe the subject with a rare token, e.g. 'a photo of sks dog'")
        for key in ("class_prompt", "validation_prompt", "lr_scheduler", "mixed_precision"):
            if form.get(key):
                params[key] = form[key]
        for key in ("lora_r", "lora_alpha", "lora_text_encoder_r", "lora_text_encoder_alpha", "max_train_steps",
                    "learning_rate", "resolution", "seed", "train_batch_size", "checkpointing_steps",
                    "validation_steps", "num_validation_images", "num_class_images", "lr_warmup_steps",
                    "gradient_accumulation_steps", "num_inference_steps"):
            if form.get(key) not in (None, ""):
                value = form[key]
                params[key] = int(value) if isinstance(value, float) and value.is_integer() and key != "learning_rate" else value
        for key in ("train_text_encoder", "with_prior_preservation", "gradient_checkpointing", "use_8bit_adam",
                    "cache_latents", "center_crop"):
            params[key] = bool(form.get(key))
        if params.get("validation_prompt") is None:
            params["validation_prompt"] = params["instance_prompt"]
        if params["with_prior_preservation"] and not params.get("class_prompt"):
            raise BoothError("prior preservation needs a class prompt, e.g. 'a photo of dog'")
        params.update(parse_extra_flags(form.get("extra_flags", "")))
        return params

    def start_training(self, owner: str, form: dict[str, Any], images: list[str] | None = None,
                       use_demo: bool = False) -> dict:
        """Check the inputs, stage the images, and queue a training job owned by ``owner``."""
        params = self.train_params(form)
        staging = self.data.uploads / uuid.uuid4().hex
        if use_demo or not images:
            if not use_demo:
                raise BoothError("no instance images: upload a few photos or tick 'use the demo subject'")
            src = Path(self.demo["images_dir"])
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
            save_images(files, staging / "instance")
        else:
            save_images(list(images), staging / "instance")
        params["instance_data_dir"] = str(staging / "instance")
        if params["with_prior_preservation"]:
            params["class_data_dir"] = str(staging / "class")
        name = safe_name(form.get("name") or f"lora-{time.strftime('%m%d-%H%M%S')}")
        meta = {"base_model": params["pretrained_model_name_or_path"], "trigger_words": params["instance_prompt"]}
        return self.jobs.submit(owner, params, name=name, meta=meta)

    def _job_finished(self, job: dict) -> None:
        out = self.jobs.output_dir(job["id"])
        images = self.jobs.validation_images(job["id"], 1)
        record = self.gallery.add_from_job(job, out, thumb=images[0] if images else None)
        job["adapter"] = record["name"]

    def job_view(self, job_id: str, owner: str) -> dict:
        """Everything the Jobs panel shows about one of ``owner``'s jobs."""
        job = self.jobs.get(job_id)
        if job.get("owner") != owner:
            raise JobError(f"job {job_id} belongs to another session")
        prog = self.jobs.progress(job_id)
        return {
            "job": job,
            "progress": prog,
            "images": [str(p) for p in self.jobs.validation_images(job_id)],
            "log": self.jobs.log_tail(job_id),
            "queue_position": next((i + 1 for i, j in enumerate(self.jobs.queue()) if j["id"] == job_id), 0),
        }

    # ---- preview and mixing ----------------------------------------------------------------
    def adapter_folder(self, name: str) -> Path:
        if not self.gallery.exists(name):
            raise GalleryError(f"no adapter named {name!r} in the gallery")
        return self.gallery.path(name)

    def preview_grid(self, req: PreviewRequest, adapters: list[tuple[str, float]], model: str | None = None):
        chosen = [(name, self.adapter_folder(name), float(scale)) for name, scale in adapters if name]
        return self.preview.grid(model or self.base_model, req, chosen)

    def mix_adapters(self, names: list[str], weights: list[float], combination: str, new_name: str) -> dict:
        from lorabooth.app.convert import read_gallery_folder, write_gallery_parts

        pairs = [(n, w) for n, w in zip(names, weights, strict=True) if n]
        if len(pairs) < 2:
            raise BoothError("pick at least two adapters to mix")
        loras = [read_gallery_folder(self.adapter_folder(n)) for n, _ in pairs]
        mixed = mix(loras, [float(w) for _, w in pairs], combination)
        bases = {self.gallery.get(n).get("base_model", "") for n, _ in pairs}
        staging = self.data.tmp / f"mix-{uuid.uuid4().hex}"
        try:
            parts = write_gallery_parts(mixed, staging)
            meta = {
                "source": "mixed",
                "mix": {"combination": combination, "adapters": [{"name": n, "weight": w} for n, w in pairs]},
                "base_model": sorted(bases)[0] if len(bases) == 1 else ", ".join(sorted(bases)),
                "trigger_words": ", ".join(self.gallery.get(n).get("trigger_words", "") for n, _ in pairs),
            }
            return self.gallery.add(new_name or "mix", parts, meta)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # ---- imports ---------------------------------------------------------------------------
    def import_adapter(self, path: str | Path, name: str, model: str | None = None) -> dict:
        """Import a ``.safetensors`` LoRA after checking its keys and shapes against the base model."""
        model = model or self.base_model
        try:
            base_parts = self.preview.base_parts(model)
        except Exception as exc:  # no base available: say so rather than import blind
            raise BoothError(f"cannot load base model {model!r} to check the adapter against it: {exc}") from exc
        return self.gallery.import_file(path, name or Path(path).stem, base_parts=base_parts,
                                        meta={"base_model": model})

    def import_url(self, url: str, name: str, progress=None, model: str | None = None,
                   max_bytes: int | None = None) -> dict:
        from lorabooth.app.downloads import download

        target = inside(self.data.tmp, f"download-{uuid.uuid4().hex}.safetensors")
        try:
            kwargs = {"max_bytes": max_bytes} if max_bytes else {}
            download(url, target, progress=progress, **kwargs)
            return self.import_adapter(target, name or Path(url.split("?")[0]).stem, model)
        finally:
            target.unlink(missing_ok=True)

    def import_hub(self, repo_id: str, filename: str, name: str, model: str | None = None) -> dict:
        from lorabooth.app.downloads import hub_download

        path = hub_download(repo_id, filename, self.data.tmp)
        return self.import_adapter(path, name or repo_id.split("/")[-1], model)

    def close(self, kill_jobs: bool = False) -> None:
        self.jobs.close(kill=kill_jobs)
