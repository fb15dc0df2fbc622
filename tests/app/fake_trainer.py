"""A stand-in trainer for the job manager's unit tests: tqdm lines, checkpoints, SIGTERM, resume.

It speaks the real trainer's flags that the job manager relies on (--output_dir, --max_train_steps,
--checkpointing_steps, --resume_from_checkpoint latest) and nothing else; the e2e tests run the real one.
"""

import argparse
import signal
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--output_dir", required=True)
parser.add_argument("--max_train_steps", type=int, default=20)
parser.add_argument("--checkpointing_steps", type=int, default=5)
parser.add_argument("--resume_from_checkpoint")
parser.add_argument("--step_s", type=float, default=0.05)
parser.add_argument("--fail_at", type=int, default=-1)
args, _ = parser.parse_known_args()
out = Path(args.output_dir)
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
start = 0
if args.resume_from_checkpoint == "latest":
    ckpts = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if ckpts:
        start = int(ckpts[-1].name.split("-")[1])
        print(f"Resuming from checkpoint {ckpts[-1].name}", file=sys.stderr)
for step in range(start + 1, args.max_train_steps + 1):
    time.sleep(args.step_s)
    if step == args.fail_at:
        print("RuntimeError: simulated failure", file=sys.stderr)
        sys.exit(3)
    loss = 1.0 / step
    sys.stderr.write(f"\rSteps: {step}/{args.max_train_steps} [00:01<00:02, 10.00it/s, loss={loss:.4f}]")
    sys.stderr.flush()
    if step % args.checkpointing_steps == 0:
        (out / f"checkpoint-{step}").mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.new("RGB", (8, 8), (step * 10 % 255, 0, 0)).save(out / f"validation_{step}.png")
    if stop:
        (out / f"checkpoint-{step}").mkdir(parents=True, exist_ok=True)
        print(f"\nstopped at step {step}", file=sys.stderr)
        sys.exit(0)
(out / "pytorch_lora_weights.safetensors").write_bytes(b"")
print("\ndone", file=sys.stderr)
