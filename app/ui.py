"""The Gradio Blocks app: Train, Jobs, Preview, Mix and Gallery tabs over one ``Booth``.

Handlers only call ``Booth`` methods and format results; long work (training) runs in a
separate process and the UI polls it with a timer, so no click ever waits for training.
Each browser keeps a random owner token in its local storage; jobs are listed and controlled
per owner, so two browsers see their own jobs and cannot stop each other's.
"""

from __future__ import annotations

import html
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
from lorabooth.app.mix import COMBINATIONS as MIX_COMBINATIONS
from lorabooth.app.preview import PreviewRequest
from lorabooth.app.service import PRESETS, Booth

SLOTS = 3  # adapter slots in the Preview and Mix tabs
TRAIN_FIELDS = (
    "name", "base_model", "instance_prompt", "class_prompt", "with_prior_preservation", "num_class_images",
    "train_text_encoder", "lora_r", "lora_alpha", "lora_text_encoder_r", "lora_text_encoder_alpha",
    "max_train_steps", "learning_rate", "resolution", "seed",
    # advanced
    "gradient_checkpointing", "mixed_precision", "use_8bit_adam", "cache_latents", "train_batch_size",
    "checkpointing_steps", "validation_prompt", "validation_steps", "num_validation_images", "lr_scheduler",
    "lr_warmup_steps", "extra_flags",
)
PRESET_FIELDS = ("gradient_checkpointing", "mixed_precision", "use_8bit_adam", "cache_latents", "resolution",
                 "train_batch_size", "max_train_steps", "learning_rate", "checkpointing_steps", "validation_steps",
                 "num_validation_images")
CSS = """
#lb-progress .lb-track { background: #e5e7eb; border-radius: 6px; height: 18px; overflow: hidden; }
#lb-progress .lb-fill { background: #f97316; height: 100%; transition: width .4s; }
#lb-progress .lb-text { font-size: 0.9em; margin-top: 4px; }
"""


def _secret(booth: Booth) -> str:
    """The key that signs owner tokens in browser storage; kept in the data folder across restarts."""
    path = booth.data.root / "browser_state.key"
    if not path.exists():
        from lorabooth.app.storage import atomic_write_bytes

        atomic_write_bytes(path, secrets.token_hex(32).encode())
        path.chmod(0o600)
    return path.read_text().strip()


def owner_of(token: str | None, request: gr.Request | None) -> str:
    """The owner id: the logged-in user when auth is on, else the browser's random token."""
    user = getattr(request, "username", None) if request is not None else None
    if user:
        return f"user:{user}"
    return f"browser:{token}" if token else ""


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def progress_html(job: dict | None, prog=None, queue_position: int = 0) -> str:
    if job is None:
        return '<div id="lb-progress-inner" data-status="none" data-step="0" data-total="0">No job selected.</div>'
    step, total = (prog.step, prog.total) if prog else (0, 0)
    pct = 100.0 * step / total if total else 0.0
    status = job["status"]
    text = prog.summary() if prog and total else ""
    if status == "queued":
        text = f"queued (position {queue_position})" if queue_position else "queued"
    elif status in ("done", "stopped", "failed", "interrupted"):
        text = f"{status}: {text}" if text else status
    error = f'<div class="lb-text">{html.escape(job.get("error") or "")}</div>' if job.get("error") else ""
    return (
        f'<div id="lb-progress-inner" data-status="{status}" data-step="{step}" data-total="{total}">'
        f'<div class="lb-track"><div class="lb-fill" style="width:{pct:.1f}%"></div></div>'
        f'<div class="lb-text"><b>{html.escape(job.get("name", job["id"]))}</b> — {html.escape(text)}</div>{error}</div>'
    )


def loss_frame(prog):
    import pandas as pd

    rows = prog.losses if prog else []
    return pd.DataFrame({"step": [s for s, _ in rows], "loss": [v for _, v in rows]})


def job_table(booth: Booth, owner: str):
    import pandas as pd

    rows = []
    for job in booth.jobs.list(owner):
        prog = booth.jobs.progress(job["id"]) if job["status"] != "queued" else None
        rows.append({
            "id": job["id"], "name": job.get("name", ""), "status": job["status"],
            "progress": f"{prog.step}/{prog.total}" if prog and prog.total else "",
            "created": _fmt_time(job.get("created")), "adapter": job.get("adapter", ""),
        })
    return pd.DataFrame(rows, columns=["id", "name", "status", "progress", "created", "adapter"])


def queue_markdown(booth: Booth, owner: str) -> str:
    running = [j for j in booth.jobs.list() if j["status"] in ("running", "stopping")]
    queued = booth.jobs.queue()
    if not running and not queued:
        return "The device is idle; no job is queued."
    lines = []
    for j in running:
        who = f"your job **{j['name']}**" if j["owner"] == owner else "a job of another session"
        lines.append(f"- running on {j.get('device') or '?'}: {who}")
    for i, j in enumerate(queued, 1):
        who = f"your job **{j['name']}**" if j["owner"] == owner else "a job of another session"
        lines.append(f"- queued #{i}: {who}")
    return "\n".join(lines)


def gallery_items(booth: Booth) -> list[tuple[str, str]]:
    items = []
    placeholder = booth.data.root / "placeholder.png"
    if not placeholder.exists():
        from PIL import Image

        Image.new("RGB", (128, 128), (200, 200, 200)).save(placeholder)
    for meta in booth.gallery.list():
        thumb = booth.gallery.thumbnail(meta["name"]) or placeholder
        items.append((str(thumb), meta["name"]))
    return items


def gallery_table(booth: Booth):
    import pandas as pd

    rows = []
    for m in booth.gallery.list():
        te = f"{m.get('text_encoder_r', '')}/{m.get('text_encoder_lora_alpha', '')}" if "text_encoder_r" in m else ""
        rows.append({
            "name": m["name"], "source": m.get("source", ""), "base model": m.get("base_model", ""),
            "r/alpha": f"{m.get('r', '')}/{m.get('lora_alpha', '')}", "text encoder r/alpha": te,
            "trigger words": m.get("trigger_words", ""), "size": f"{m.get('size_bytes', 0) / 1024:.1f} KiB",
            "created": _fmt_time(m.get("created")),
        })
    cols = ["name", "source", "base model", "r/alpha", "text encoder r/alpha", "trigger words", "size", "created"]
    return pd.DataFrame(rows, columns=cols)


def build_ui(booth: Booth) -> gr.Blocks:
    """The whole app; ``booth`` does the work."""
    secret = _secret(booth)
    presets = list(PRESETS)
    # choices are refreshed per session on load and tab switches; custom values let API clients name
    # adapters added later (the handlers check every name against the gallery)
    names = booth.gallery.names()
    default_preset = "CPU demo"

    # prompts the shipped demo subject answers to ("a photo of sks star" on the world model)
    subject_prompt = booth.demo.get("instance_prompt") or "a photo of sks dog"
    with gr.Blocks(title="lorabooth") as demo:
        token = gr.BrowserState("", storage_key="lorabooth_owner", secret=secret)
        selected = gr.State("")  # the job shown in the live panel
        seen = gr.State("")  # signature of the images last sent, to avoid re-sending them every tick
        gr.Markdown("# lorabooth\nTrain, mix and preview LoRA adapters. Base model: `" + booth.base_model + "`")

        # ---- Train ---------------------------------------------------------------------------
        with gr.Tab("Train", id="train", elem_id="tab-train"):
            with gr.Row():
                with gr.Column(scale=1):
                    f: dict[str, Any] = {}
                    images = gr.File(label="Instance images", file_count="multiple", file_types=["image"],
                                     elem_id="train-images")
                    use_demo = gr.Checkbox(label="Use the demo subject", value=False, elem_id="use-demo")
                    f["name"] = gr.Textbox(label="Adapter name", placeholder="my-subject", elem_id="train-name")
                    f["base_model"] = gr.Textbox(label="Base model (local folder or hub id)", value=booth.base_model,
                                                 elem_id="train-base")
                    f["instance_prompt"] = gr.Textbox(label="Instance prompt", value="",
                                                      placeholder="a photo of sks dog", elem_id="instance-prompt")
                    f["class_prompt"] = gr.Textbox(label="Class prompt", placeholder="a photo of dog",
                                                   elem_id="class-prompt")
                    with gr.Row():
                        f["with_prior_preservation"] = gr.Checkbox(label="Prior preservation", value=False)
                        f["num_class_images"] = gr.Number(label="Class images", value=50, precision=0)
                    with gr.Row():
                        f["train_text_encoder"] = gr.Checkbox(label="Text-encoder LoRA", value=False)
                    with gr.Row():
                        f["lora_r"] = gr.Number(label="UNet r", value=4, precision=0)
                        f["lora_alpha"] = gr.Number(label="UNet alpha", value=4)
                        f["lora_text_encoder_r"] = gr.Number(label="Text-encoder r", value=4, precision=0)
                        f["lora_text_encoder_alpha"] = gr.Number(label="Text-encoder alpha", value=4)
                    with gr.Row():
                        f["max_train_steps"] = gr.Number(label="Steps", value=150, precision=0, elem_id="train-steps")
                        f["learning_rate"] = gr.Number(label="Learning rate", value=1e-3)
                        f["resolution"] = gr.Number(label="Resolution", value=64, precision=0, elem_id="train-res")
                        f["seed"] = gr.Number(label="Seed", value=0, precision=0)
                    preset = gr.Dropdown(presets, value=default_preset, label="Preset", elem_id="preset")
                    with gr.Accordion("Advanced", open=False):
                        f["gradient_checkpointing"] = gr.Checkbox(label="Gradient checkpointing")
                        f["mixed_precision"] = gr.Dropdown(["no", "fp16", "bf16"], value="no", label="Mixed precision")
                        f["use_8bit_adam"] = gr.Checkbox(label="8-bit Adam (bitsandbytes, GPU)")
                        f["cache_latents"] = gr.Checkbox(label="Cache latents", value=True)
                        f["train_batch_size"] = gr.Number(label="Batch size", value=1, precision=0)
                        f["checkpointing_steps"] = gr.Number(label="Checkpoint every N steps", value=50, precision=0,
                                                             elem_id="train-ckpt")
                        f["validation_prompt"] = gr.Textbox(label="Validation prompt (default: instance prompt)")
                        f["validation_steps"] = gr.Number(label="Validate every N steps", value=50, precision=0,
                                                          elem_id="train-val")
                        f["num_validation_images"] = gr.Number(label="Validation images", value=1, precision=0)
                        f["lr_scheduler"] = gr.Dropdown(
                            ["constant", "constant_with_warmup", "linear", "cosine"], value="constant",
                            label="LR schedule")
                        f["lr_warmup_steps"] = gr.Number(label="Warm-up steps", value=0, precision=0)
                        f["extra_flags"] = gr.Textbox(label="Extra trainer flags", placeholder="--snr_gamma 5 --center_crop",
                                                      elem_id="extra-flags")
                    with gr.Row():
                        start_btn = gr.Button("Start training", variant="primary", elem_id="start-btn")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                        resume_btn = gr.Button("Resume", elem_id="resume-btn")
                    train_msg = gr.Markdown(elem_id="train-msg")
                with gr.Column(scale=1):
                    progress = gr.HTML(progress_html(None), elem_id="lb-progress")
                    loss_plot = gr.LinePlot(loss_frame(None), x="step", y="loss", title="Training loss",
                                            elem_id="loss-plot", height=220)
                    val_images = gr.Gallery(label="Latest validation images", columns=4, height=200,
                                            elem_id="val-images", format="png")
                    log_box = gr.Textbox(label="Log (tail)", lines=10, max_lines=10, elem_id="log-tail",
                                         autoscroll=True)

        # ---- Jobs ----------------------------------------------------------------------------
        with gr.Tab("Jobs", id="jobs", elem_id="tab-jobs"):
            queue_md = gr.Markdown(elem_id="queue")
            jobs_df = gr.Dataframe(job_table(booth, ""), interactive=False, elem_id="jobs-table")
            with gr.Row():
                job_pick = gr.Dropdown([], label="Job", elem_id="job-pick", allow_custom_value=True)
                show_btn = gr.Button("Show in Train tab", elem_id="show-job")
                jstop_btn = gr.Button("Stop", variant="stop", elem_id="jobs-stop")
                jresume_btn = gr.Button("Resume", elem_id="jobs-resume")
            jobs_msg = gr.Markdown(elem_id="jobs-msg")

        # ---- Preview -------------------------------------------------------------------------
        with gr.Tab("Preview", id="preview", elem_id="tab-preview") as t_preview:
            with gr.Row():
                with gr.Column():
                    p_model = gr.Textbox(label="Base model", value=booth.base_model, elem_id="preview-model")
                    p_prompt = gr.Textbox(label="Prompt", value=subject_prompt, elem_id="preview-prompt")
                    p_neg = gr.Textbox(label="Negative prompt", value="")
                    with gr.Row():
                        p_steps = gr.Slider(1, 100, value=20, step=1, label="Steps", elem_id="preview-steps")
                        p_guidance = gr.Slider(1, 15, value=7.5, step=0.5, label="Guidance")
                    with gr.Row():
                        p_seed = gr.Number(label="Seed", value=0, precision=0)
                        p_size = gr.Number(label="Size (0 = model's own)", value=0, precision=0)
                    p_slots = []
                    for i in range(SLOTS):
                        with gr.Row():
                            dd = gr.Dropdown(names, value=None, label=f"Adapter {i + 1}",
                                             elem_id=f"preview-adapter-{i}", allow_custom_value=True)
                            sl = gr.Slider(0, 2, value=1.0, step=0.05, label="Scale (0 = base)",
                                           elem_id=f"preview-scale-{i}")
                        p_slots.append((dd, sl))
                    p_btn = gr.Button("Generate", variant="primary", elem_id="preview-btn")
                with gr.Column():
                    p_out = gr.Gallery(label="Base vs adapters (same seed)", columns=4, format="png",
                                       elem_id="preview-out")
                    p_msg = gr.Markdown(elem_id="preview-msg")

        # ---- Mix -----------------------------------------------------------------------------
        with gr.Tab("Mix", id="mix", elem_id="tab-mix") as t_mix:
            m_slots = []
            for i in range(SLOTS):
                with gr.Row():
                    dd = gr.Dropdown(names, value=None, label=f"Adapter {i + 1}", elem_id=f"mix-adapter-{i}",
                                     allow_custom_value=True)
                    wt = gr.Number(label="Weight", value=1.0, elem_id=f"mix-weight-{i}")
                m_slots.append((dd, wt))
            with gr.Row():
                m_comb = gr.Dropdown(list(MIX_COMBINATIONS), value="cat", label="Combination", elem_id="mix-comb")
                m_name = gr.Textbox(label="Name of the mix", value="mix", elem_id="mix-name")
                m_prompt = gr.Textbox(label="Preview prompt", value=subject_prompt, elem_id="mix-prompt")
                m_steps = gr.Slider(1, 100, value=20, step=1, label="Preview steps", elem_id="mix-steps")
            m_btn = gr.Button("Mix and save to gallery", variant="primary", elem_id="mix-btn")
            m_out = gr.Gallery(label="Base vs mix", columns=2, format="png", elem_id="mix-out")
            m_msg = gr.Markdown(elem_id="mix-msg")

        # ---- Gallery -------------------------------------------------------------------------
        with gr.Tab("Gallery", id="gallery", elem_id="tab-gallery") as t_gallery:
            g_thumbs = gr.Gallery(label="Adapters", columns=8, height=200, elem_id="gallery-thumbs",
                                  allow_preview=False, object_fit="contain", preview=False)
            g_table = gr.Dataframe(gallery_table(booth), interactive=False, elem_id="gallery-table")
            with gr.Row():
                g_pick = gr.Dropdown(names, value=None, label="Adapter", elem_id="gallery-pick",
                                     allow_custom_value=True)
                g_fmt = gr.Radio(["peft", "diffusers", "kohya"], value="diffusers", label="Download as",
                                 elem_id="gallery-fmt")
                g_dl_btn = gr.Button("Prepare download", elem_id="gallery-dl-btn")
            g_file = gr.File(label="Download", elem_id="gallery-file", interactive=False)
            with gr.Row():
                g_newname = gr.Textbox(label="New name", elem_id="gallery-newname")
                g_rename_btn = gr.Button("Rename", elem_id="gallery-rename")
                g_delete_btn = gr.Button("Delete", variant="stop", elem_id="gallery-delete")
            with gr.Accordion("Import an adapter (.safetensors: PEFT, diffusers or kohya/A1111)", open=False):
                with gr.Row():
                    g_upload = gr.File(label="Upload .safetensors", file_types=[".safetensors"],
                                       elem_id="gallery-upload")
                    g_imp_name = gr.Textbox(label="Name", elem_id="gallery-import-name")
                    g_imp_btn = gr.Button("Import upload", elem_id="gallery-import-btn")
                with gr.Row():
                    g_url = gr.Textbox(label="URL of a .safetensors file", elem_id="gallery-url")
                    g_url_btn = gr.Button("Import from URL", elem_id="gallery-url-btn")
                with gr.Row():
                    g_repo = gr.Textbox(label="Hub repo id (owner/name)", elem_id="gallery-repo")
                    g_repo_file = gr.Textbox(label="File in the repo (optional)")
                    g_repo_btn = gr.Button("Import from Hub", elem_id="gallery-repo-btn")
            g_msg = gr.Markdown(elem_id="gallery-msg")

        timer = gr.Timer(1.0)  # the live panel of the selected job
        jobs_timer = gr.Timer(3.0)  # the job list and the queue

        # ---- handlers ------------------------------------------------------------------------
        adapter_dropdowns = [dd for dd, _ in p_slots] + [dd for dd, _ in m_slots] + [g_pick]
        form_keys = list(f)
        form_inputs = [f[k] for k in form_keys]

        def _choices(keep: list[str] | None = None):
            names = booth.gallery.names()
            keep = keep or [None] * len(adapter_dropdowns)
            return [gr.update(choices=names, value=v if v in names else None) for v in keep]

        def on_load(tok, request: gr.Request):
            tok = tok or uuid.uuid4().hex
            owner = owner_of(tok, request)
            mine = booth.jobs.list(owner)
            current = mine[0]["id"] if mine else ""
            return [tok, current, gr.update(choices=[j["id"] for j in mine], value=current or None),
                    *_choices(), gallery_items(booth), gallery_table(booth)]

        demo.load(on_load, [token], [token, selected, job_pick, *adapter_dropdowns, g_thumbs, g_table],
                  api_visibility="private")

        def on_preset(name):
            values = PRESETS.get(name, {})
            return [gr.update(value=values[k]) if k in values else gr.update() for k in PRESET_FIELDS]

        preset.change(on_preset, [preset], [f[k] for k in PRESET_FIELDS], api_visibility="private")

        def on_demo(checked):
            if not checked:
                return gr.update(), gr.update()
            return gr.update(value=booth.demo.get("instance_prompt", "")), gr.update(value=booth.demo.get("class_prompt", ""))

        use_demo.change(on_demo, [use_demo], [f["instance_prompt"], f["class_prompt"]], api_visibility="private")

        def on_start(request: gr.Request, tok, files, demo_checked, *values):
            owner = owner_of(tok, request)
            form = dict(zip(form_keys, values, strict=True))
            paths = [getattr(x, "name", x) for x in (files or [])]
            try:
                job = booth.start_training(owner, form, paths, use_demo=bool(demo_checked))
            except Exception as exc:
                return gr.update(), f"**Could not start:** {html.escape(str(exc))}", gr.update()
            mine = [j["id"] for j in booth.jobs.list(owner)]
            return job["id"], f"Queued job `{job['id']}` ({job['name']}).", gr.update(choices=mine, value=job["id"])

        start_btn.click(on_start, [token, images, use_demo, *form_inputs], [selected, train_msg, job_pick],
                        api_visibility="private")

        def _stop(tok, job_id, request: gr.Request):
            try:
                booth.jobs.stop(job_id, owner_of(tok, request))
                return f"Stopping `{job_id}`; its last checkpoint is kept. Press Resume to continue."
            except Exception as exc:
                return f"**Could not stop:** {html.escape(str(exc))}"

        def _resume(tok, job_id, request: gr.Request):
            try:
                booth.jobs.resume(job_id, owner_of(tok, request))
                return f"Resuming `{job_id}` from its latest checkpoint."
            except Exception as exc:
                return f"**Could not resume:** {html.escape(str(exc))}"

        stop_btn.click(_stop, [token, selected], [train_msg], api_visibility="private")
        resume_btn.click(_resume, [token, selected], [train_msg], api_visibility="private")
        jstop_btn.click(_stop, [token, job_pick], [jobs_msg], api_visibility="private")
        jresume_btn.click(_resume, [token, job_pick], [jobs_msg], api_visibility="private")
        show_btn.click(lambda j: j or "", [job_pick], [selected], api_visibility="private")

        def on_tick(tok, job_id, last, request: gr.Request):
            if not job_id:
                return progress_html(None), gr.skip(), gr.skip(), "", last
            try:
                view = booth.job_view(job_id, owner_of(tok, request))
            except Exception as exc:
                return f"<div>{html.escape(str(exc))}</div>", gr.skip(), gr.skip(), "", last
            prog = view["progress"]
            sig = f"{job_id}|{'|'.join(view['images'])}|{len(prog.losses)}"
            changed = sig != last  # plot and images are re-sent only when they changed
            return (
                progress_html(view["job"], prog, view["queue_position"]),
                loss_frame(prog) if changed else gr.skip(),
                view["images"] if changed else gr.skip(),
                view["log"],
                sig,
            )

        timer.tick(on_tick, [token, selected, seen], [progress, loss_plot, val_images, log_box, seen],
                   api_visibility="private", show_progress="hidden")

        def on_jobs_tick(tok, request: gr.Request):
            owner = owner_of(tok, request)
            return queue_markdown(booth, owner), job_table(booth, owner)

        jobs_timer.tick(on_jobs_tick, [token], [queue_md, jobs_df], api_visibility="private", show_progress="hidden")

        def refresh_lists(*current):
            return [*_choices(list(current)), gallery_items(booth), gallery_table(booth)]

        refresh_outputs = [*adapter_dropdowns, g_thumbs, g_table]
        for tab in (t_preview, t_mix, t_gallery):
            tab.select(refresh_lists, adapter_dropdowns, refresh_outputs, api_visibility="private")

        def on_preview(model, prompt, neg, steps, guidance, seed, size, *slots):
            pairs = [(slots[2 * i], slots[2 * i + 1]) for i in range(SLOTS) if slots[2 * i]]
            req = PreviewRequest(prompt=prompt, negative_prompt=neg, steps=int(steps), guidance=float(guidance),
                                 seed=int(seed or 0), size=int(size) or None)
            try:
                grid = booth.preview_grid(req, pairs, model=model or None)
            except Exception as exc:
                return gr.update(), f"**Preview failed:** {html.escape(str(exc))}"
            return grid, f"{len(grid)} image(s), seed {int(seed or 0)}."

        p_inputs = [p_model, p_prompt, p_neg, p_steps, p_guidance, p_seed, p_size]
        for dd, sl in p_slots:
            p_inputs += [dd, sl]
        p_btn.click(on_preview, p_inputs, [p_out, p_msg], api_name="preview")

        def on_mix(comb, name, prompt, steps, *slots):
            names = [slots[2 * i] for i in range(SLOTS)]
            weights = [slots[2 * i + 1] or 0.0 for i in range(SLOTS)]
            try:
                record = booth.mix_adapters(names, weights, comb, name)
                req = PreviewRequest(prompt=prompt or "a photo", steps=int(steps), seed=0)
                grid = booth.preview_grid(req, [(record["name"], 1.0)])
                booth.gallery.set_thumbnail(record["name"], grid[-1][0])
            except Exception as exc:
                return gr.update(), f"**Mix failed:** {html.escape(str(exc))}", *_choices()
            keep = [None] * SLOTS + names + [record["name"]]  # preview slots, mix slots, gallery pick
            return grid, f"Saved mix **{record['name']}** ({comb}, r={record.get('r')}) to the gallery.", *_choices(keep)

        m_inputs = [m_comb, m_name, m_prompt, m_steps]
        for dd, wt in m_slots:
            m_inputs += [dd, wt]
        m_btn.click(on_mix, m_inputs, [m_out, m_msg, *adapter_dropdowns], api_name="mix")

        def on_download(name, fmt):
            try:
                path = booth.gallery.export(name or "", fmt)
            except Exception as exc:
                return None, f"**Download failed:** {html.escape(str(exc))}"
            return str(path), f"Ready: `{Path(path).name}`"

        g_dl_btn.click(on_download, [g_pick, g_fmt], [g_file, g_msg], api_name="export_adapter")

        def _gallery_done(msg, keep=None):
            return [msg, *_choices(keep), gallery_items(booth), gallery_table(booth)]

        g_outputs = [g_msg, *refresh_outputs]

        def on_rename(name, new):
            try:
                rec = booth.gallery.rename(name or "", new or "")
                keep = [None] * (len(adapter_dropdowns) - 1) + [rec["name"]]
                return _gallery_done(f"Renamed to **{rec['name']}**.", keep)
            except Exception as exc:
                return _gallery_done(f"**Rename failed:** {html.escape(str(exc))}")

        def on_delete(name):
            try:
                booth.gallery.delete(name or "")
                return _gallery_done(f"Deleted **{html.escape(name)}**.")
            except Exception as exc:
                return _gallery_done(f"**Delete failed:** {html.escape(str(exc))}")

        def on_import(file, name, model):
            if not file:
                return _gallery_done("Choose a .safetensors file first.")
            try:
                rec = booth.import_adapter(getattr(file, "name", file), name, model or None)
                return _gallery_done(f"Imported **{rec['name']}** ({', '.join(rec.get('parts', []))}).")
            except Exception as exc:
                return _gallery_done(f"**Import refused:** {html.escape(str(exc))}")

        def on_url(url, name, model, progress=gr.Progress()):
            try:
                rec = booth.import_url(url or "", name, progress=lambda frac, desc: progress(frac, desc=desc),
                                       model=model or None)
                return _gallery_done(f"Imported **{rec['name']}** from the URL.")
            except Exception as exc:
                return _gallery_done(f"**Import refused:** {html.escape(str(exc))}")

        def on_hub(repo, filename, name, model):
            try:
                rec = booth.import_hub(repo or "", filename or "", name, model or None)
                return _gallery_done(f"Imported **{rec['name']}** from the Hub.")
            except Exception as exc:
                return _gallery_done(f"**Import refused:** {html.escape(str(exc))}")

        g_rename_btn.click(on_rename, [g_pick, g_newname], g_outputs, api_visibility="private")
        g_delete_btn.click(on_delete, [g_pick], g_outputs, api_visibility="private")
        g_imp_btn.click(on_import, [g_upload, g_imp_name, p_model], g_outputs, api_visibility="private")
        g_url_btn.click(on_url, [g_url, g_imp_name, p_model], g_outputs, api_visibility="private")
        g_repo_btn.click(on_hub, [g_repo, g_repo_file, g_imp_name, p_model], g_outputs, api_visibility="private")

        # ---- the scriptable API (gradio_client) ----------------------------------------------
        def train(instance_prompt: str, owner_token: str, max_train_steps: int = 150, learning_rate: float = 1e-3,
                  resolution: int = 64, lora_r: int = 4, lora_alpha: float = 4.0, seed: int = 0,
                  train_text_encoder: bool = False, name: str = "", base_model: str = "",
                  use_demo_subject: bool = True, extra_flags: str = "") -> dict:
            """Queue a DreamBooth LoRA run on the demo subject; returns the job record."""
            if not owner_token:
                raise gr.Error("owner_token is required: any secret string that identifies you")
            half = max(1, int(max_train_steps) // 2)
            form = {**PRESETS["CPU demo"], "instance_prompt": instance_prompt, "max_train_steps": max_train_steps,
                    "learning_rate": learning_rate, "resolution": resolution, "lora_r": lora_r,
                    "lora_alpha": lora_alpha, "seed": seed, "train_text_encoder": train_text_encoder,
                    "name": name, "base_model": base_model, "extra_flags": extra_flags,
                    "validation_steps": half, "checkpointing_steps": half, "num_validation_images": 1}
            try:
                return booth.start_training(f"api:{owner_token}", form, None, use_demo=use_demo_subject)
            except Exception as exc:
                raise gr.Error(str(exc)) from exc

        def job_status(job_id: str, owner_token: str) -> dict:
            """Status, step/total, losses and validation image paths of one of your API jobs."""
            try:
                view = booth.job_view(job_id, f"api:{owner_token}")
            except Exception as exc:
                raise gr.Error(str(exc)) from exc
            prog = view["progress"]
            return {"job": view["job"], "step": prog.step, "total": prog.total, "losses": prog.losses,
                    "images": view["images"], "queue_position": view["queue_position"]}

        def stop_job(job_id: str, owner_token: str) -> dict:
            """Stop one of your API jobs (its last checkpoint is kept)."""
            try:
                return booth.jobs.stop(job_id, f"api:{owner_token}")
            except Exception as exc:
                raise gr.Error(str(exc)) from exc

        gr.api(train, api_name="train")
        gr.api(job_status, api_name="job_status")
        gr.api(stop_job, api_name="stop_job")
    return demo


def launch(booth: Booth, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           auth: tuple[str, str] | None = None, block: bool = True, quiet: bool = False):
    """Start the server; only the data folder and the shipped assets are served."""
    from lorabooth.app.service import ASSETS

    demo = build_ui(booth)
    demo.queue(default_concurrency_limit=4)
    allowed = [str(booth.data.root)] + ([str(ASSETS)] if ASSETS.exists() else [])
    return demo, demo.launch(
        server_name=host, server_port=port, share=share, auth=auth, allowed_paths=allowed,
        prevent_thread_lock=not block, quiet=quiet, css=CSS, footer_links=["api"],
    )
