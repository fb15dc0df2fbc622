#!/usr/bin/env python
"""Write assets/demo-subject/: instance images of a subject the base world model never saw, plus subject.json.

The subject is a checkered purple star: patterns never occur in pre-training and the purple x star
combination is held out, so everything DreamBooth learns about it is new.

    python scripts/make_demo_subject.py [--out assets/demo-subject] [--n 5]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from lorabooth.adapters.serialization import atomic_write_text
from lorabooth.world.generator import Scene, subject_views

SUBJECT = Scene("star", "purple", pattern="checkered", background="white")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="assets/demo-subject")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(subject_views(SUBJECT, args.n, seed=args.seed)):
        tmp = out / f".{i:02d}.png.tmp"
        img.save(tmp, format="PNG")
        os.replace(tmp, out / f"{i:02d}.png")
    meta = {
        "instance_prompt": "a photo of sks star",
        "class_prompt": "a photo of a star",
        "class_word": "star",
        "identifier": "sks",
        "attributes": {"shape": SUBJECT.shape, "colour": SUBJECT.colour, "pattern": SUBJECT.pattern,
                       "background": SUBJECT.background},
        "made_by": f"scripts/make_demo_subject.py --n {args.n} --seed {args.seed}",
    }
    atomic_write_text(out / "subject.json", json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.n} images and subject.json to {out}")


if __name__ == "__main__":
    main()
