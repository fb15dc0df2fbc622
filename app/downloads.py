"""Fetch adapters from a URL (streamed, size-limited, with progress) or from a Hugging Face Hub repo."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

MAX_DOWNLOAD_BYTES = 2 * 1024**3
CHUNK = 1 << 20


class DownloadError(ValueError):
    """A URL or hub import that failed; the message says which and why."""


def download(url: str, target: Path, *, max_bytes: int = MAX_DOWNLOAD_BYTES,
             progress: Callable[[float, str], None] | None = None, timeout: float = 30.0) -> Path:
    """Stream ``url`` into ``target``, stopping at ``max_bytes``; only http(s) and ``.safetensors`` files."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DownloadError(f"{url!r}: only http:// and https:// URLs can be imported")
    if not parsed.path.lower().endswith(".safetensors"):
        raise DownloadError(f"{url!r}: only .safetensors files can be imported (pickled .ckpt/.pt/.bin are unsafe)")
    request = urllib.request.Request(url, headers={"User-Agent": "lorabooth"})
    tmp = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            total = int(resp.headers.get("Content-Length") or 0)
            if total > max_bytes:
                raise DownloadError(f"{url}: {total / 2**20:.0f} MiB is over the {max_bytes / 2**20:.0f} MiB limit")
            done = 0
            with tmp.open("wb") as f:
                while chunk := resp.read(CHUNK):
                    done += len(chunk)
                    if done > max_bytes:
                        raise DownloadError(f"{url}: more than the {max_bytes / 2**20:.0f} MiB limit; download stopped")
                    f.write(chunk)
                    if progress is not None:
                        progress(done / total if total else 0.0, f"{done / 2**20:.1f} MiB")
        os.replace(tmp, target)
    except OSError as exc:
        raise DownloadError(f"{url}: download failed ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def hub_download(repo_id: str, filename: str, cache_dir: Path) -> Path:
    """One ``.safetensors`` file of a hub repo (the first one when ``filename`` is empty)."""
    try:
        from huggingface_hub import hf_hub_download, list_repo_files
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with diffusers
        raise DownloadError("hub import needs huggingface_hub") from exc
    repo_id = repo_id.strip()
    if repo_id.count("/") != 1 or ".." in repo_id:
        raise DownloadError(f"{repo_id!r}: a hub repo id looks like 'owner/name'")
    try:
        if not filename:
            files = [f for f in list_repo_files(repo_id) if f.endswith(".safetensors")]
            if not files:
                raise DownloadError(f"{repo_id}: no .safetensors file in this repo")
            filename = files[0]
        if not filename.endswith(".safetensors"):
            raise DownloadError(f"{filename}: only .safetensors files can be imported")
        return Path(hf_hub_download(repo_id, filename, cache_dir=str(cache_dir / "hub")))
    except DownloadError:
        raise
    except Exception as exc:  # offline, missing repo, gated repo...
        raise DownloadError(f"{repo_id}: could not download from the Hub ({exc.__class__.__name__}: {exc})") from exc
