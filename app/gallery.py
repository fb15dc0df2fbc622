"""The adapter gallery: every trained, mixed or imported adapter, one folder each.

``<data>/adapters/<name>/`` holds the adapter in PEFT's layout, one sub-folder per model part
(``unet/``, ``text_encoder/``: ``adapter_config.json`` + ``adapter_model.safetensors``), plus
``meta.json`` (base model, r/alpha, trigger words, source, created) and ``thumb.png``.
Names are user-typed and pass through :func:`safe_name`; every path is checked to stay inside
the gallery folder. Folders appear atomically: built under ``tmp/`` and renamed into place.
"""

from __future__ import annotations

import shutil
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

from lorabooth.app import convert
from lorabooth.app.storage import DataDir, atomic_write_json, inside, read_json, safe_name
from lorabooth.app.uploads import UploadError, check_safetensors

PARTS = ("unet", "text_encoder", "text_encoder_2")
EXPORT_FORMATS = ("peft", "diffusers", "kohya")


class GalleryError(ValueError):
    """A gallery request that cannot be honoured; the message says what to do instead."""


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Gallery:
    def __init__(self, data: DataDir) -> None:
        self.data = data
        self.root = data.adapters

    # ---- reading ---------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return inside(self.root, safe_name(name))

    def exists(self, name: str) -> bool:
        return (self.path(name) / "meta.json").exists()

    def get(self, name: str) -> dict:
        meta = read_json(self.path(name) / "meta.json")
        if meta is None:
            raise GalleryError(f"no adapter named {name!r} in the gallery")
        return meta

    def list(self) -> list[dict]:
        """Every adapter's record, newest first."""
        records = [m for p in self.root.glob("*/meta.json") if (m := read_json(p))]
        return sorted(records, key=lambda m: m.get("created", 0), reverse=True)

    def names(self) -> list[str]:
        return [m["name"] for m in self.list()]

    def thumbnail(self, name: str) -> Path | None:
        thumb = self.path(name) / "thumb.png"
        return thumb if thumb.exists() else None

    def part_dirs(self, name: str) -> dict[str, Path]:
        """``{"unet": folder, "text_encoder": folder}`` for the parts this adapter has."""
        folder = self.path(name)
        return {p: folder / p for p in PARTS if (folder / p / "adapter_config.json").exists()}

    def unique_name(self, wanted: str) -> str:
        base = safe_name(wanted)
        name, i = base, 2
        while self.path(name).exists():
            name = f"{base}-{i}"
            i += 1
        return name

    # ---- adding ----------------------------------------------------------------------------
    def add(self, name: str, parts: dict[str, Path], meta: dict[str, Any], thumb: Path | None = None) -> dict:
        """Copy PEFT part folders into a new gallery entry; ``name`` gets a suffix if it is taken."""
        if not parts:
            raise GalleryError("nothing to add: no unet/ or text_encoder/ adapter folder was given")
        name = self.unique_name(name)
        staging = self.data.tmp / f"add-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            for part, src in parts.items():
                if part not in PARTS:
                    raise GalleryError(f"unknown model part {part!r}; expected one of {PARTS}")
                shutil.copytree(src, staging / part, ignore=shutil.ignore_patterns("README.md"))
            if thumb is not None and Path(thumb).exists():
                from PIL import Image

                with Image.open(thumb) as img:
                    img.convert("RGB").resize((128, 128)).save(staging / "thumb.png")
            record = {
                "name": name,
                "created": time.time(),
                "source": "unknown",
                "base_model": "",
                "trigger_words": "",
                **meta,
            }
            record["name"] = name
            record.update(convert.describe(staging))
            record["size_bytes"] = _folder_size(staging)
            atomic_write_json(staging / "meta.json", record)
            staging.rename(self.path(name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return record

    def add_from_job(self, job: dict, output_dir: Path, thumb: Path | None = None) -> dict:
        """Register a finished training run's ``unet/`` and ``text_encoder/`` folders."""
        parts = {p: output_dir / p for p in PARTS if (output_dir / p / "adapter_config.json").exists()}
        if not parts:
            if (output_dir / convert.DIFFUSERS_FILE).exists():
                return self.import_file(
                    output_dir / convert.DIFFUSERS_FILE, job.get("name") or job["id"],
                    meta={"source": "trained", "job": job["id"], **job.get("meta", {})}, thumb=thumb,
                )
            raise GalleryError(f"job {job['id']}: no unet/ or {convert.DIFFUSERS_FILE} in {output_dir}")
        meta = {"source": "trained", "job": job["id"], **job.get("meta", {})}
        return self.add(job.get("name") or job["id"], parts, meta, thumb)

    def import_file(self, path: str | Path, name: str, *, meta: dict | None = None, thumb: Path | None = None,
                    base_parts: dict[str, Any] | None = None) -> dict:
        """Import a LoRA ``.safetensors`` in PEFT, diffusers or kohya/A1111 format.

        With ``base_parts`` (``{"unet": module, ...}``) every key and shape is checked against the
        base model first, so a LoRA for another architecture is refused with the first mismatch.
        """
        path = Path(path)
        try:
            check_safetensors(path)
        except UploadError as exc:
            raise GalleryError(str(exc)) from exc
        staging = self.data.tmp / f"import-{uuid.uuid4().hex}"
        try:
            parts = convert.file_to_peft_folders(path, staging, base_parts=base_parts)
            record = self.add(name, parts, {"source": "imported", "original_file": path.name, **(meta or {})}, thumb)
        except convert.ConvertError as exc:
            raise GalleryError(str(exc)) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return record

    # ---- changing --------------------------------------------------------------------------
    def rename(self, old: str, new: str) -> dict:
        meta = self.get(old)
        target = safe_name(new)
        if self.path(target).exists():
            raise GalleryError(f"an adapter named {target!r} already exists; pick another name")
        self.path(old).rename(self.path(target))
        meta["name"] = target
        atomic_write_json(self.path(target) / "meta.json", meta)
        return meta

    def delete(self, name: str) -> None:
        folder = self.path(name)
        if not (folder / "meta.json").exists():
            raise GalleryError(f"no adapter named {name!r} in the gallery")
        trash = self.data.tmp / f"delete-{uuid.uuid4().hex}"
        folder.rename(trash)  # disappears at once; the slow removal happens out of sight
        shutil.rmtree(trash, ignore_errors=True)

    def set_thumbnail(self, name: str, image) -> None:
        from PIL import Image

        img = image if isinstance(image, Image.Image) else Image.open(image)
        tmp = self.path(name) / ".thumb.png.tmp"
        img.convert("RGB").resize((128, 128)).save(tmp, format="PNG")
        tmp.replace(self.path(name) / "thumb.png")

    # ---- exporting -------------------------------------------------------------------------
    def export(self, name: str, fmt: str) -> Path:
        """A downloadable file: ``peft`` (zip of the PEFT folders), ``diffusers`` or ``kohya`` safetensors."""
        meta = self.get(name)
        parts = self.part_dirs(name)
        out_dir = self.data.exports / uuid.uuid4().hex[:8]
        out_dir.mkdir(parents=True)
        if fmt == "peft":
            target = out_dir / f"{meta['name']}-peft.zip"
            tmp = target.with_suffix(".zip.tmp")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for part, folder in parts.items():
                    for f in sorted(folder.iterdir()):
                        zf.write(f, f"{meta['name']}/{part}/{f.name}")
                zf.write(self.path(name) / "meta.json", f"{meta['name']}/meta.json")
            tmp.replace(target)
            return target
        if fmt == "diffusers":
            return convert.peft_folders_to_diffusers(parts, out_dir / convert.DIFFUSERS_FILE)
        if fmt == "kohya":
            return convert.peft_folders_to_kohya(parts, out_dir / f"{meta['name']}.safetensors", meta)
        raise GalleryError(f"unknown export format {fmt!r}; choose one of {EXPORT_FORMATS}")
