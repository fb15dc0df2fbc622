#!/usr/bin/env python
"""Train the evaluator's shape classifier (world/shape_classifier.safetensors), seeded, on CPU.

    python scripts/train_shape_classifier.py            # ~14 min on 2 cores

It renders seeded generator scenes (every shape, colour, pattern and background style), damages
each batch the way model output is damaged (blur, resampling, colour cast, shading, noise: see
`shape_classifier.degrade`) and fits `ShapeNet`. It never sees a VAE or a diffusion model, so the
accuracy `scripts/eval_world_model.py` reports on VAE round-trips is a held-out number.
At the end it prints its accuracy on fresh clean and damaged generator images.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from lorabooth.adapters.serialization import save_safetensors
from lorabooth.world.generator import SHAPES, random_scene, render
from lorabooth.world.shape_classifier import WEIGHTS_PATH, ShapeNet, degrade, to_tensor
from tqdm import tqdm


def rendered(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    images = [np.asarray(render(s), np.float32) for s in tqdm(scenes, desc=f"render seed {seed}", leave=False)]
    return to_tensor(images), torch.tensor([SHAPES.index(s.shape) for s in scenes])


def accuracy(net: ShapeNet, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((net(x).argmax(1) == y).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(WEIGHTS_PATH), help="where to write the safetensors weights")
    p.add_argument("--n_images", type=int, default=20000, help="rendered training scenes (reused with fresh damage)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    p.add_argument("--batch_size", type=int, default=128, help="images per optimizer step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (cosine decay to 0)")
    p.add_argument("--clean_share", type=float, default=0.2, help="share of each batch left undamaged")
    p.add_argument("--n_val", type=int, default=1000, help="fresh scenes (next seed) for the held-out accuracy")
    p.add_argument("--seed", type=int, default=0, help="seeds the scenes (validation uses seed+1), damage and initialisation")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    x, y = rendered(args.n_images, args.seed)
    x_val, y_val = rendered(args.n_val, args.seed + 1)
    net = ShapeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / args.steps))
    )
    t0 = time.time()
    bar = tqdm(range(args.steps), desc="shape classifier")
    for _ in bar:
        idx = torch.randint(len(x), (args.batch_size,), generator=gen)
        batch = x[idx]
        damaged = degrade(batch, gen)
        keep = (torch.rand(args.batch_size, generator=gen) < args.clean_share)[:, None, None, None]
        batch = torch.where(keep, batch, damaged)
        if torch.rand(1, generator=gen) < 0.5:  # mirror: shapes are symmetric left-right
            batch = batch.flip(3)
        loss = F.cross_entropy(net(batch), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    net.eval()
    clean = accuracy(net, x_val, y_val)
    damaged = accuracy(net, degrade(x_val, torch.Generator().manual_seed(args.seed + 2)), y_val)
    print(f"trained {args.steps} steps in {(time.time() - t0) / 60:.1f} min; held-out accuracy: "
          f"clean {clean:.4f}, damaged {damaged:.4f}")
    save_safetensors({k: v.half() for k, v in net.state_dict().items()}, args.out,
                     metadata={"steps": str(args.steps), "seed": str(args.seed),
                               "clean_accuracy": f"{clean:.4f}", "damaged_accuracy": f"{damaged:.4f}"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
