"""The job manager: separate processes, queue, stop/resume, ownership, restart recovery."""

import time
from pathlib import Path

import pytest
from lorabooth.app.jobs import JobError, JobManager, flags_to_argv
from lorabooth.app.progress import parse_tqdm, tail
from lorabooth.app.storage import DataDir

HERE = Path(__file__).parent


def manager(tmp_path, **kw) -> JobManager:
    return JobManager(
        DataDir(tmp_path / "data"),
        trainer_module="fake_trainer",
        devices=["cpu"],
        poll_s=0.05,
        extra_env={"PYTHONPATH": str(HERE)},
        **kw,
    )


def wait_for(pred, timeout=30.0):
    end = time.time() + timeout
    while time.time() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_flags_to_argv_drops_false_and_none():
    argv = flags_to_argv({"use_lora": True, "lora_r": 4, "seed": None, "train_text_encoder": False, "lr": 1e-4})
    assert argv == ["--use_lora", "--lora_r", "4", "--lr", "0.0001"]


def test_parse_tqdm_takes_last_update_and_losses():
    text = (
        "Loading weights: 100%|##| 36/36 [00:00<00:00, 4225.05it/s]\n"
        "Steps:  10%|#  | 1/10 [00:01<00:09,  1.00it/s, loss=0.5]\r"
        "Loading pipeline components...: 100%|##| 5/5 [00:00<00:00, 2287.97it/s]\n"
        "Steps:  20%|## | 2/10 [00:02<00:08,  2.50s/it, loss=0.25]"
    )
    prog = parse_tqdm(text)
    assert (prog.step, prog.total, prog.eta) == (2, 10, "00:08")
    assert prog.rate == pytest.approx(0.4)
    assert prog.losses == [(1, 0.5), (2, 0.25)]
    assert "2/10" in prog.summary()
    assert parse_tqdm("Generating class images: 50%|#| 5/10 [00:01<00:01, 5.0it/s]").total == 0


def test_tail_collapses_carriage_returns(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("start\n\rA 1/3\rA 2/3\rA 3/3\nend\n")
    assert tail(log).splitlines() == ["start", "A 3/3", "end"]


def test_job_runs_to_done_in_a_separate_process(tmp_path):
    done = []
    jm = manager(tmp_path, on_finished=done.append)
    try:
        job = jm.submit("alice", {"max_train_steps": 10, "checkpointing_steps": 5, "step_s": 0.02})
        wait_for(lambda: jm.get(job["id"])["status"] == "done")
        rec = jm.get(job["id"])
        assert rec["returncode"] == 0 and rec["pid"] > 0
        assert jm.progress(job["id"]).step == 10
        assert [d["id"] for d in done] == [job["id"]]
        assert jm.validation_images(job["id"])
    finally:
        jm.close(kill=True)


def test_one_job_per_device_queue_in_order(tmp_path):
    jm = manager(tmp_path)
    try:
        a = jm.submit("alice", {"max_train_steps": 30, "step_s": 0.05})
        b = jm.submit("bob", {"max_train_steps": 3, "step_s": 0.01})
        wait_for(lambda: jm.get(a["id"])["status"] == "running")
        time.sleep(0.3)
        assert jm.get(b["id"])["status"] == "queued"
        assert [j["id"] for j in jm.queue()] == [b["id"]]
        wait_for(lambda: jm.get(b["id"])["status"] == "done")
        assert jm.get(b["id"])["started"] >= jm.get(a["id"])["ended"]
    finally:
        jm.close(kill=True)


def test_stop_keeps_checkpoint_and_resume_continues(tmp_path):
    jm = manager(tmp_path)
    try:
        job = jm.submit("alice", {"max_train_steps": 200, "checkpointing_steps": 1000, "step_s": 0.02})
        wait_for(lambda: jm.progress(job["id"]).step >= 5)
        with pytest.raises(JobError, match="another session"):
            jm.stop(job["id"], "mallory")
        jm.stop(job["id"], "alice")
        wait_for(lambda: jm.get(job["id"])["status"] == "stopped")
        ckpts = list(jm.output_dir(job["id"]).glob("checkpoint-*"))
        assert ckpts, "SIGTERM must leave the last checkpoint behind"
        stopped_at = int(ckpts[0].name.split("-")[1])
        with pytest.raises(JobError, match="another session"):
            jm.resume(job["id"], "mallory")
        jm.resume(job["id"], "alice")
        wait_for(lambda: jm.get(job["id"])["status"] == "running")
        assert jm.get(job["id"])["command"][-2:] == ["--resume_from_checkpoint", "latest"]
        wait_for(lambda: "Resuming from checkpoint" in jm.log_tail(job["id"], 200))
        assert f"checkpoint-{stopped_at}" in jm.log_tail(job["id"], 200)
    finally:
        jm.close(kill=True)


def test_failure_is_recorded_and_resumable(tmp_path):
    jm = manager(tmp_path)
    try:
        job = jm.submit("alice", {"max_train_steps": 10, "fail_at": 3, "step_s": 0.01})
        wait_for(lambda: jm.get(job["id"])["status"] == "failed")
        assert "simulated failure" in jm.get(job["id"])["error"]
        assert jm.resume(job["id"], "alice")["status"] == "queued"
    finally:
        jm.close(kill=True)


def test_restart_keeps_jobs_and_adopts_running_trainer(tmp_path):
    jm = manager(tmp_path)
    job = jm.submit("alice", {"max_train_steps": 60, "step_s": 0.05})
    wait_for(lambda: jm.get(job["id"])["status"] == "running")
    jm.close()  # the app goes away; its trainer keeps running
    jm2 = manager(tmp_path)
    try:
        assert jm2.get(job["id"])["status"] == "running"
        assert [j["id"] for j in jm2.list("alice")] == [job["id"]]
        assert jm2.list("bob") == []
        wait_for(lambda: jm2.get(job["id"])["status"] == "done")
    finally:
        jm2.close(kill=True)


def test_job_ids_cannot_walk_out_of_the_jobs_folder(tmp_path):
    jm = manager(tmp_path, start=False)
    for bad in ("../x", "/etc", "a/b", ""):
        with pytest.raises(JobError):
            jm.get(bad)
