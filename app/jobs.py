"""Background training jobs: separate trainer processes, a queue per device, state on disk.

Each job is a folder ``<data>/jobs/<id>/`` with ``job.json`` (status, owner, arguments, pid,
timestamps; written atomically), ``log.txt`` (the trainer's stdout and stderr) and ``output/``
(the trainer's ``--output_dir``). Because everything is on disk, a browser refresh or an app
restart shows the same jobs; a trainer that outlived the app is adopted again, one that died
with it is marked ``interrupted`` and can be resumed from its last checkpoint.

One job runs per device at a time; the rest wait in FIFO order. Every job has an owner (the
browser session that started it) and only that owner may stop or resume it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorabooth.app.progress import Progress, read_progress, tail, validation_images
from lorabooth.app.storage import DataDir, atomic_write_json, read_json

TRAINER_MODULE = "lorabooth.trainer.train_dreambooth"
ACTIVE = ("queued", "running", "stopping")
RESUMABLE = ("stopped", "failed", "interrupted")
STOP_GRACE_S = 60.0  # SIGTERM first so the trainer can finish its step; SIGKILL after this long


class JobError(RuntimeError):
    """A job request that cannot be honoured (unknown id, wrong owner, wrong state)."""


def flags_to_argv(params: dict[str, Any]) -> list[str]:
    """``{"use_lora": True, "lora_r": 4, "seed": None}`` -> ``["--use_lora", "--lora_r", "4"]``."""
    argv: list[str] = []
    for key, value in params.items():
        if value is None or value is False or value == "":
            continue
        flag = "--" + key.lstrip("-")
        if value is True:
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def default_devices() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except ImportError:  # the app still lists jobs without torch
        pass
    return ["cpu"]


def _pid_runs_job(pid: int | None, job_dir: Path) -> bool:
    """True when ``pid`` is alive and (where /proc exists) really is this job's trainer."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return str(job_dir) in text and ") Z " not in stat  # a zombie is dead
    return True


class JobManager:
    """Start, watch, stop and resume trainer processes; the single writer of ``job.json`` files."""

    def __init__(
        self,
        data: DataDir,
        *,
        trainer_module: str = TRAINER_MODULE,
        python: str = sys.executable,
        devices: list[str] | None = None,
        on_finished: Callable[[dict], None] | None = None,
        poll_s: float = 0.5,
        start: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.data = data
        self.trainer_module = trainer_module
        self.python = python
        self.devices = devices or default_devices()
        self.on_finished = on_finished
        self.poll_s = poll_s
        self.extra_env = dict(extra_env or {})
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recover()
        if start:
            self._thread = threading.Thread(target=self._loop, name="lorabooth-jobs", daemon=True)
            self._thread.start()

    # ---- on-disk records -------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        if not job_id or not all(c.isalnum() or c == "-" for c in job_id):
            raise JobError(f"no job {job_id!r}")
        return self.data.jobs / job_id

    def get(self, job_id: str) -> dict:
        job = read_json(self.job_dir(job_id) / "job.json")
        if job is None:
            raise JobError(f"no job {job_id!r} under {self.data.jobs}")
        return job

    def _save(self, job: dict) -> None:
        job["updated"] = time.time()
        atomic_write_json(self.job_dir(job["id"]) / "job.json", job)

    def list(self, owner: str | None = None) -> list[dict]:
        """Jobs newest first; only ``owner``'s when given."""
        jobs = []
        for path in self.data.jobs.glob("*/job.json"):
            job = read_json(path)
            if job and (owner is None or job.get("owner") == owner):
                jobs.append(job)
        return sorted(jobs, key=lambda j: j.get("created", 0), reverse=True)

    def queue(self) -> list[dict]:
        """Queued jobs of every owner in the order they will start."""
        return sorted((j for j in self.list() if j["status"] == "queued"), key=lambda j: j["queued_at"])

    def output_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "output"

    def log_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "log.txt"

    def progress(self, job_id: str) -> Progress:
        return read_progress(self.log_path(job_id), self.output_dir(job_id))

    def log_tail(self, job_id: str, lines: int = 40) -> str:
        return tail(self.log_path(job_id), lines)

    def validation_images(self, job_id: str, limit: int = 4) -> list[Path]:
        return validation_images(self.output_dir(job_id), limit)

    # ---- requests --------------------------------------------------------------------------
    def submit(self, owner: str, params: dict[str, Any], *, name: str = "", meta: dict | None = None) -> dict:
        """Queue a training run. ``params`` are trainer flags; ``--output_dir`` is set here."""
        if not owner:
            raise JobError("a job needs an owner (the browser session that starts it)")
        if "output_dir" in params:
            raise JobError("output_dir is chosen by the job manager (it lives in the job's folder)")
        now = time.time()
        job_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + uuid.uuid4().hex[:6]
        job = {
            "id": job_id,
            "name": name or job_id,
            "owner": owner,
            "status": "queued",
            "params": params,
            "meta": meta or {},
            "created": now,
            "queued_at": now,
            "attempts": 0,
            "pid": None,
            "device": None,
            "returncode": None,
            "error": "",
        }
        with self._lock:
            self.job_dir(job_id).mkdir(parents=True)
            self._save(job)
        self._wake()
        return job

    def _owned(self, job_id: str, owner: str) -> dict:
        job = self.get(job_id)
        if job.get("owner") != owner:
            raise JobError(f"job {job_id} was started by another session; only its owner can change it")
        return job

    def stop(self, job_id: str, owner: str) -> dict:
        """Stop a queued or running job; a running trainer gets SIGTERM and keeps its last checkpoint."""
        with self._lock:
            job = self._owned(job_id, owner)
            if job["status"] == "queued":
                job["status"] = "stopped"
                job["ended"] = time.time()
            elif job["status"] == "running":
                job["status"] = "stopping"
                job["stop_requested"] = time.time()
                self._signal(job, signal.SIGTERM)
            else:
                raise JobError(f"job {job_id} is {job['status']}; only queued or running jobs can be stopped")
            self._save(job)
            return job

    def resume(self, job_id: str, owner: str) -> dict:
        """Queue a stopped, failed or interrupted job again; the trainer resumes from its latest checkpoint."""
        with self._lock:
            job = self._owned(job_id, owner)
            if job["status"] not in RESUMABLE:
                raise JobError(f"job {job_id} is {job['status']}; only {', '.join(RESUMABLE)} jobs can be resumed")
            job.update(status="queued", queued_at=time.time(), returncode=None, error="", pid=None)
            job.pop("stop_requested", None)
            self._save(job)
        self._wake()
        return job

    def command(self, job: dict) -> list[str]:
        argv = [self.python, "-m", self.trainer_module, *flags_to_argv(job["params"])]
        argv += ["--output_dir", str(self.output_dir(job["id"]))]
        if job["attempts"] > 0 and "resume_from_checkpoint" not in job["params"]:
            argv += ["--resume_from_checkpoint", "latest"]
        return argv

    # ---- the scheduler ---------------------------------------------------------------------
    def _wake(self) -> None:
        if self._thread is None:
            self.tick()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception as exc:  # keep scheduling; the error shows in the app's log
                print(f"lorabooth jobs: scheduler error: {exc!r}", file=sys.stderr)

    def tick(self) -> None:
        """Reap finished trainers, escalate slow stops, start queued jobs on free devices."""
        with self._lock:
            busy: set[str] = set()
            for job in self.list():
                if job["status"] in ("running", "stopping"):
                    if self._finished(job):
                        continue
                    busy.add(job.get("device") or "")
            for job in self.queue():
                free = [d for d in self.devices if d not in busy]
                if not free:
                    break
                self._start(job, free[0])
                busy.add(free[0])

    def _finished(self, job: dict) -> bool:
        """Record the end of a job whose process exited; True when it did."""
        proc = self._procs.get(job["id"])
        if proc is not None:
            rc = proc.poll()
            if rc is None:
                self._escalate(job)
                return False
        elif _pid_runs_job(job.get("pid"), self.job_dir(job["id"])):
            self._escalate(job)
            return False
        else:  # adopted after a restart and now gone: its exit code is lost
            rc = 0 if (self.output_dir(job["id"]) / "pytorch_lora_weights.safetensors").exists() else None
        self._procs.pop(job["id"], None)
        log = self._logs.pop(job["id"], None)
        if log is not None:
            log.close()
        job["returncode"] = rc
        job["ended"] = time.time()
        finished_anyway = rc == 0 and (self.output_dir(job["id"]) / "pytorch_lora_weights.safetensors").exists()
        if job["status"] == "stopping" and not finished_anyway:
            job["status"] = "stopped"
        elif rc == 0:
            job["status"] = "done"
        else:
            job["status"] = "failed" if rc is not None else "interrupted"
            last = [line for line in self.log_tail(job["id"], 20).splitlines() if line.strip()]
            job["error"] = last[-1] if last else f"trainer exited with code {rc}"
        self._save(job)
        if job["status"] == "done" and self.on_finished is not None:
            try:
                self.on_finished(job)  # may add facts to the record (e.g. the gallery name)
            except Exception as exc:  # the run itself succeeded; say why it is not in the gallery
                job["error"] = f"trained, but adding it to the gallery failed: {exc}"
            self._save(job)
        return True

    def _escalate(self, job: dict) -> None:
        if job["status"] == "stopping" and time.time() - job.get("stop_requested", 0) > STOP_GRACE_S:
            self._signal(job, signal.SIGKILL)

    def _signal(self, job: dict, sig: int) -> None:
        pid = job.get("pid")
        if not pid or not _pid_runs_job(pid, self.job_dir(job["id"])):
            return
        try:
            os.killpg(pid, sig)  # the trainer leads its own group: accelerate's children get it too
        except (ProcessLookupError, PermissionError):
            pass

    def _start(self, job: dict, device: str) -> None:
        out = self.output_dir(job["id"])
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env}
        if device.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        elif device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        log = self.log_path(job["id"]).open("ab")
        if job["attempts"]:
            log.write(f"\n===== resumed (attempt {job['attempts'] + 1}) =====\n".encode())
            log.flush()
        argv = self.command(job)
        try:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        except OSError as exc:
            log.close()
            job.update(status="failed", error=f"could not start the trainer ({argv[0]}): {exc}", ended=time.time())
            self._save(job)
            return
        self._procs[job["id"]] = proc
        self._logs[job["id"]] = log
        job.update(status="running", pid=proc.pid, device=device, started=time.time(), command=argv)
        job["attempts"] += 1
        self._save(job)

    def _recover(self) -> None:
        """After a restart: keep watching trainers that still run, mark the others interrupted."""
        with self._lock:
            for job in self.list():
                if job["status"] in ("running", "stopping") and not _pid_runs_job(
                    job.get("pid"), self.job_dir(job["id"])
                ):
                    self._finished(job)

    def close(self, *, kill: bool = False) -> None:
        """Stop the scheduler; with ``kill`` also SIGTERM every trainer this manager started."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if kill:
            with self._lock:
                for proc in list(self._procs.values()):
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGTERM)
                for proc in self._procs.values():
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                self.tick_reap_only()

    def tick_reap_only(self) -> None:
        with self._lock:
            for job in self.list():
                if job["status"] in ("running", "stopping"):
                    self._finished(job)
