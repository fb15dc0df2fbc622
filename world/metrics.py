"""Scores for the base model and for DreamBooth results, read off images by `lorabooth.world.evaluator`.

In the spirit of the DreamBooth paper (fidelity, PRES prior drift, DIV diversity), but exact, because
the evaluator knows the world:

    >>> from diffusers import StableDiffusionPipeline
    >>> from lorabooth.world.metrics import SubjectSpec, evaluate_dreambooth, prompt_adherence
    >>> pipe = StableDiffusionPipeline.from_pretrained("assets/world-model")
    >>> prompt_adherence(pipe, n=64, seed=0)                      # share with shape and colour right
    0.9...
    >>> subject = SubjectSpec.from_json("assets/demo-subject/subject.json")
    >>> evaluate_dreambooth(pipe, subject, n=32, seed=0)
    {'subject_fidelity': ..., 'pres': ..., 'pres_pattern': ..., 'pres_background': ..., 'div': ...,
     'class_shape_rate': ...,
     'composition': ..., 'n': 32}

Every function takes either a diffusers pipeline or a `generate(prompts, seed) -> list[PIL.Image]`
function (see `as_generate_fn`), so trainers can score any sampler. Sample i of a call uses its own
generator seeded with `seed + i`, so scores do not depend on the batch size.

- prompt adherence: "a photo of a {colour} {shape}" over the colour x shape combinations seen in
  pre-training (or the held-out ones); a sample counts when shape and colour both match.
- subject fidelity: share of "a photo of {identifier} {class}" samples showing the subject's shape,
  colour and pattern.
- subject_background: share of those samples on the instance photos' background (partial fidelity).
- PRES (prior drift, lower is better): share of "a photo of a {class}" samples that show the
  subject's colour and pattern; `pres_pattern` counts the subject's pattern alone and `pres_background`
  the subject's background (drift shows there first on this world: the class prompt starts drawing
  the instance photos' backdrop).
- DIV: normalized entropy (0..1) of the colours among the class-prompt samples.
- class_shape_rate: share of class-prompt samples that still show the class's shape.
- composition: "a photo of {identifier} {class} on a {colour} background" samples that keep the
  subject and show the asked background colour.
- evaluator accuracy: share of attributes read right on held-out generator images, as drawn or after
  a round-trip through a model's VAE (the sharpest its decoder can show).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .evaluator import Attributes, describe
from .generator import COLOURS, HELD_OUT_COMBOS, PATTERNS, SHAPES, random_scene, render
from .shape_classifier import to_tensor

GenerateFn = Callable[[Sequence[str], int], list[Image.Image]]

DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 5.0


def as_generate_fn(pipe, *, num_inference_steps: int = DEFAULT_STEPS, guidance_scale: float = DEFAULT_GUIDANCE,
                   batch_size: int = 32, size: int = 64) -> GenerateFn:
    """Wrap a diffusers text-to-image pipeline as `generate(prompts, seed) -> list of PIL images`."""
    import torch  # lazy: the evaluator itself needs only numpy and PIL

    def generate(prompts: Sequence[str], seed: int) -> list[Image.Image]:
        images: list[Image.Image] = []
        device = getattr(pipe, "device", torch.device("cpu"))
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            gens = [torch.Generator(device).manual_seed(seed + start + i) for i in range(len(chunk))]
            out = pipe(chunk, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                       height=size, width=size, generator=gens, output_type="pil")
            images.extend(out.images)
        return images

    return generate


def _generate_fn(pipe_or_fn) -> GenerateFn:
    if callable(pipe_or_fn) and not hasattr(pipe_or_fn, "unet"):
        return pipe_or_fn
    return as_generate_fn(pipe_or_fn)


def adherence_prompts(n: int, seed: int = 0, held_out: bool = False) -> list[tuple[str, str, str]]:
    """`n` (prompt, colour, shape) triples cycling through the combinations in a seeded order."""
    combos = [(c, s) for s in SHAPES for c in COLOURS if ((c, s) in HELD_OUT_COMBOS) == held_out]
    order = np.random.default_rng(seed).permutation(len(combos))
    picked = [combos[order[i % len(combos)]] for i in range(n)]
    return [(f"a photo of a {c} {s}", c, s) for c, s in picked]


def prompt_adherence_report(pipe_or_fn, n: int = 64, seed: int = 0, held_out: bool = False) -> dict:
    """Prompt adherence with its parts: shape accuracy, colour accuracy, per-shape rates, samples."""
    triples = adherence_prompts(n, seed, held_out)
    images = _generate_fn(pipe_or_fn)([t[0] for t in triples], seed)
    attrs = [describe(im) for im in images]
    shape_ok = [a.shape == s for a, (_, _, s) in zip(attrs, triples)]
    colour_ok = [a.colour == c for a, (_, c, _) in zip(attrs, triples)]
    both = [x and y for x, y in zip(shape_ok, colour_ok)]
    per_shape = {s: float(np.mean([b for b, t in zip(both, triples) if t[2] == s]))
                 for s in SHAPES if any(t[2] == s for t in triples)}
    return {"prompt_adherence": float(np.mean(both)), "shape_accuracy": float(np.mean(shape_ok)),
            "colour_accuracy": float(np.mean(colour_ok)), "per_shape": per_shape, "n": n,
            "samples": [(t[0], a.to_dict()) for t, a in zip(triples, attrs)]}


def background_adherence(pipe_or_fn, n: int = 32, seed: int = 0) -> dict:
    """Share of "a photo of a {colour} {shape} on a {background} background" samples with that background.

    Backgrounds come from the prompt, not from the starting noise, only if the model was trained so
    (see the noise offset in scripts/train_world_model.py); DreamBooth's composition metric needs it.
    """
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    triples = adherence_prompts(n, seed)
    backgrounds = [str(rng.choice([b for b in names if b != c])) for _, c, _ in triples]
    prompts = [f"{p} on a {b} background" for (p, _, _), b in zip(triples, backgrounds)]
    attrs = [describe(im) for im in _generate_fn(pipe_or_fn)(prompts, seed)]
    hits = [a.background == b for a, b in zip(attrs, backgrounds)]
    return {"background_adherence": float(np.mean(hits)), "n": n}


def prompt_adherence(pipe_or_fn, n: int = 64, seed: int = 0, held_out: bool = False) -> float:
    """Share of "a photo of a {colour} {shape}" samples whose shape and colour both match."""
    return prompt_adherence_report(pipe_or_fn, n, seed, held_out)["prompt_adherence"]


@dataclass(frozen=True)
class SubjectSpec:
    """A DreamBooth subject of the shapes world: what the instance images show."""

    class_word: str
    shape: str
    colour: str
    pattern: str = "plain"
    background: str = "white"
    identifier: str = "sks"

    def __post_init__(self) -> None:
        if self.shape not in SHAPES or self.colour not in COLOURS or self.pattern not in PATTERNS:
            raise ValueError(f"SubjectSpec({self.shape!r}, {self.colour!r}, {self.pattern!r}) is not in the shapes "
                             f"world: shapes {SHAPES}, colours {tuple(COLOURS)}, patterns {PATTERNS}")

    @property
    def instance_prompt(self) -> str:
        return f"a photo of {self.identifier} {self.class_word}"

    @property
    def class_prompt(self) -> str:
        return f"a photo of a {self.class_word}"

    def shows_subject(self, a: Attributes) -> bool:
        return (a.shape, a.colour, a.pattern) == (self.shape, self.colour, self.pattern)

    @classmethod
    def from_json(cls, path: str | Path) -> SubjectSpec:
        """Read a subject.json (keys: class_word, attributes {shape, colour, pattern, background}, identifier)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            attrs = data["attributes"]
            return cls(class_word=data["class_word"], shape=attrs["shape"], colour=attrs["colour"],
                       pattern=attrs.get("pattern", "plain"), background=attrs.get("background", "white"),
                       identifier=data.get("identifier", "sks"))
        except FileNotFoundError:
            raise FileNotFoundError(f"subject file {path} does not exist") from None
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a valid subject.json ({e!r}); it needs class_word and "
                             f"attributes.shape/colour/pattern") from None


def normalized_entropy(values: Sequence, n_categories: int) -> float:
    """Entropy of `values` divided by log(n_categories): 0 = all alike, 1 = evenly spread."""
    counts = np.array(list(Counter(values).values()), np.float64)
    if len(values) == 0 or n_categories < 2:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / math.log(n_categories))


def evaluate_dreambooth(pipe_or_fn, subject: SubjectSpec, n: int = 32, seed: int = 0,
                        composition_backgrounds: Sequence[str] | None = None) -> dict:
    """Subject fidelity, PRES, DIV, class-shape rate and composition for one subject (n samples each)."""
    generate = _generate_fn(pipe_or_fn)
    inst = [describe(im) for im in generate([subject.instance_prompt] * n, seed)]
    cls = [describe(im) for im in generate([subject.class_prompt] * n, seed + 100_000)]
    if composition_backgrounds is None:
        composition_backgrounds = [c for c in ("yellow", "blue", "green", "pink") if c not in
                                   (subject.colour, subject.background)][:3]
    comp_prompts = [f"{subject.instance_prompt} on a {composition_backgrounds[i % len(composition_backgrounds)]}"
                    f" background" for i in range(n)]
    comp = [describe(im) for im in generate(comp_prompts, seed + 200_000)]
    comp_ok = [subject.shows_subject(a) and a.background == composition_backgrounds[i % len(composition_backgrounds)]
               for i, a in enumerate(comp)]
    return {
        "subject_fidelity": float(np.mean([subject.shows_subject(a) for a in inst])),
        # partial fidelity: the instance photos' backdrop, the first thing a LoRA binds to the identifier
        "subject_background": float(np.mean([a.background == subject.background for a in inst])),
        "pres": float(np.mean([(a.colour, a.pattern) == (subject.colour, subject.pattern) for a in cls])),
        "pres_pattern": float(np.mean([a.pattern == subject.pattern for a in cls])) if subject.pattern != "plain"
        else float("nan"),
        # drift shows first in the background: the class prompt starts drawing the instance photos' backdrop
        "pres_background": float(np.mean([a.background == subject.background for a in cls])),
        "div": normalized_entropy([a.colour for a in cls], len(COLOURS)),
        "class_shape_rate": float(np.mean([a.shape == subject.shape for a in cls])),
        "composition": float(np.mean(comp_ok)),
        "n": n,
    }


ATTRIBUTES = ("shape", "colour", "pattern", "background", "background_style")


def vae_round_trip(vae, images: Sequence[Image.Image], batch_size: int = 100) -> list[Image.Image]:
    """Encode and decode 64x64 images with a diffusers AutoencoderKL (latent means, no sampling)."""
    out: list[Image.Image] = []
    for i in range(0, len(images), batch_size):
        x = to_tensor([np.asarray(im.convert("RGB"), np.float32) for im in images[i : i + batch_size]])
        with torch.inference_mode():
            y = vae.decode(vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean).sample.float().cpu()
        y = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        out += [Image.fromarray(a) for a in y]
    return out


def evaluator_accuracy(n: int, seed: int, vae=None, allow_patterns: bool = True) -> dict[str, float]:
    """Per-attribute share read right on `n` held-out generator scenes (`seed`), optionally after a
    `vae` round-trip; `all_attributes` is their mean and `shape_and_colour` what adherence needs.
    `allow_patterns=False` keeps to plain fills, what the base model's prompts ask for."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, allow_patterns=allow_patterns) for _ in range(n)]
    images = [render(s) for s in scenes]
    if vae is not None:
        images = vae_round_trip(vae, images)
    got = [describe(im) for im in images]
    acc = {k: float(np.mean([getattr(g, k) == getattr(s, k) for g, s in zip(got, scenes)])) for k in ATTRIBUTES}
    acc["all_attributes"] = float(np.mean(list(acc.values())))
    acc["shape_and_colour"] = float(np.mean([(g.shape, g.colour) == (s.shape, s.colour) for g, s in zip(got, scenes)]))
    return acc
