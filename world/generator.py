"""The shapes world: a seeded generator of 64x64 RGB images and their captions.

Every image shows one shape (circle, square, triangle, star, heart, diamond) in one of ten
named colours, at a size and position, on a plain or striped background in another colour.
Shapes may carry a fill pattern (checkered, dotted, striped), but patterns are never shown to
the base model in pre-training (`pretraining_scene`) and some colour x shape combinations are
held out as well: both are the raw material for DreamBooth subjects.

    >>> from lorabooth.world.generator import Scene, render, caption, pretraining_scene
    >>> img = render(Scene("star", "purple", pattern="checkered"))   # PIL.Image 64x64
    >>> scene = pretraining_scene(rng)                               # rng: numpy Generator
    >>> caption(scene)                                               # "a photo of a red star on a blue background"

Rendering is deterministic: the same scene (and seed) always gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
_SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased edges look like real model output

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 0),
    "yellow": (245, 225, 30),
    "green": (30, 160, 50),
    "cyan": (40, 210, 220),
    "blue": (30, 60, 210),
    "purple": (130, 40, 180),
    "pink": (250, 130, 200),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
PATTERNS: tuple[str, ...] = ("plain", "checkered", "dotted", "striped")
BACKGROUND_STYLES: tuple[str, ...] = ("plain", "striped")
SIZES: tuple[str, ...] = ("small", "medium", "large")
_SIZE_RADIUS = {"small": (9, 12), "medium": (13, 17), "large": (18, 23)}

# Colour x shape combinations never shown in pre-training (DreamBooth can teach them).
HELD_OUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {("purple", "star"), ("green", "heart"), ("orange", "triangle"), ("cyan", "square")}
)


@dataclass(frozen=True)
class Scene:
    """Everything that decides one image. `x`, `y` are the shape centre in pixels."""

    shape: str
    colour: str
    pattern: str = "plain"
    background: str = "white"
    background_style: str = "plain"
    size: str = "medium"
    radius: float = 15.0
    x: float = 32.0
    y: float = 32.0

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.shape, SHAPES, "shape"),
            (self.colour, tuple(COLOURS), "colour"),
            (self.background, tuple(COLOURS), "background"),
            (self.pattern, PATTERNS, "pattern"),
            (self.background_style, BACKGROUND_STYLES, "background_style"),
            (self.size, SIZES, "size"),
        ):
            if value not in allowed:
                raise ValueError(f"Scene {what}={value!r} is not in the shapes world; choose one of {allowed}")

    def to_dict(self) -> dict:
        return asdict(self)


def secondary_tone(colour: str) -> tuple[int, int, int]:
    """The second tone used by stripes/checks/dots: a darker shade, or a lighter one for black."""
    r, g, b = COLOURS[colour]
    if colour == "black":
        return (110, 110, 110)
    return (int(r * 0.55), int(g * 0.55), int(b * 0.55))


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy - r * math.sin(a)) for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = math.pi / 2 + i * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy - rad * math.sin(a)))
        return pts
    if shape == "heart":
        pts = []
        for i in range(80):
            t = 2 * math.pi * i / 80
            hx = 16 * math.sin(t) ** 3
            hy = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + hx * r / 16.5, cy - (hy + 2.5) * r / 16.5))
        return pts
    return None  # circle: drawn as an ellipse


def _shape_mask(scene: Scene) -> Image.Image:
    s = _SUPERSAMPLE
    size = IMAGE_SIZE * s
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = scene.x * s, scene.y * s, scene.radius * s
    poly = _shape_polygon(scene.shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(poly, fill=255)
    return mask


def _fill(colour: str, pattern: str, size: int, phase: int) -> np.ndarray:
    """An RGB array (size x size x 3) in `colour` with `pattern` laid over it."""
    base = np.empty((size, size, 3), np.float32)
    base[:] = COLOURS[colour]
    if pattern == "plain":
        return base
    s = _SUPERSAMPLE
    yy, xx = np.mgrid[0:size, 0:size]
    if pattern == "checkered":
        cell = 6 * s
        on = (((xx + phase) // cell) + ((yy + phase) // cell)) % 2 == 1
    elif pattern == "striped":
        on = ((xx + yy + phase) // (4 * s)) % 2 == 1  # diagonal stripes, unlike the background's
    else:  # dotted
        cell = 7 * s
        dx = (xx + phase) % cell - cell / 2
        dy = (yy + phase) % cell - cell / 2
        on = dx * dx + dy * dy <= (1.6 * s) ** 2
    base[on] = secondary_tone(colour)
    return base


def _background(scene: Scene, size: int) -> np.ndarray:
    bg = np.empty((size, size, 3), np.float32)
    bg[:] = COLOURS[scene.background]
    if scene.background_style == "striped":
        yy = np.arange(size)[:, None].repeat(size, 1)
        bg[(yy // (8 * _SUPERSAMPLE)) % 2 == 1] = secondary_tone(scene.background)  # horizontal bands
    return bg


def render(scene: Scene) -> Image.Image:
    """Draw `scene` as a 64x64 RGB PIL image (deterministic)."""
    s = _SUPERSAMPLE
    size = IMAGE_SIZE * s
    alpha = np.asarray(_shape_mask(scene), np.float32)[..., None] / 255.0
    phase = int(scene.x * 7 + scene.y * 13) % (6 * s)  # pattern phase follows the position, not chance
    img = _background(scene, size) * (1 - alpha) + _fill(scene.colour, scene.pattern, size, phase) * alpha
    big = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")
    return big.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)


def caption(scene: Scene, *, with_background: bool = True, with_colour: bool = True, with_size: bool = False) -> str:
    """The caption of `scene`, e.g. "a photo of a small red checkered star on a striped blue background"."""
    words = ["a photo of a"]
    if with_size and scene.size != "medium":
        words.append(scene.size)
    if with_colour:
        words.append(scene.colour)
    if scene.pattern != "plain":
        words.append(scene.pattern)
    words.append(scene.shape)
    if with_background:
        style = "striped " if scene.background_style == "striped" else ""
        words.append(f"on a {style}{scene.background} background")
    return " ".join(words)


def random_scene(
    rng: np.random.Generator,
    *,
    shape: str | None = None,
    colour: str | None = None,
    pattern: str | None = None,
    background: str | None = None,
    background_style: str | None = None,
    allow_patterns: bool = True,
    allow_held_out: bool = True,
) -> Scene:
    """A random scene; fixed attributes are passed in, the rest drawn from `rng`."""
    names = list(COLOURS)
    while True:
        sh = shape or SHAPES[rng.integers(len(SHAPES))]
        col = colour or names[rng.integers(len(names))]
        if allow_held_out or (col, sh) not in HELD_OUT_COMBOS or (shape and colour):
            break
    pat = pattern or (PATTERNS[rng.integers(len(PATTERNS))] if allow_patterns else "plain")
    others = [c for c in names if c != col]
    bg = background or others[rng.integers(len(others))]
    style = background_style or BACKGROUND_STYLES[int(rng.random() < 0.3)]
    size = SIZES[rng.integers(len(SIZES))]
    lo, hi = _SIZE_RADIUS[size]
    radius = float(rng.uniform(lo, hi))
    margin = radius + 2
    x = float(rng.uniform(margin, IMAGE_SIZE - margin))
    y = float(rng.uniform(margin, IMAGE_SIZE - margin))
    return Scene(sh, col, pat, bg, style, size, radius, x, y)


def pretraining_scene(rng: np.random.Generator) -> Scene:
    """A scene the base model may see: no patterns, no held-out colour x shape combination."""
    return random_scene(rng, allow_patterns=False, allow_held_out=False)


def pretraining_caption(scene: Scene, rng: np.random.Generator) -> str:
    """Caption variants used in pre-training; 10% are dropped to "" for classifier-free guidance."""
    u = rng.random()
    if u < 0.10:
        return ""
    if u < 0.20:  # class-only captions ("a photo of a star") keep a diverse prior for DreamBooth
        return caption(scene, with_background=False, with_colour=False)
    return caption(scene, with_background=rng.random() < 0.6, with_size=rng.random() < 0.3)


def pretraining_dataset(n: int, seed: int = 0) -> Iterator[tuple[Image.Image, Scene]]:
    """`n` (image, scene) pairs of the pre-training world, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        scene = pretraining_scene(rng)
        yield render(scene), scene


def subject_views(subject: Scene, n: int, seed: int = 0) -> list[Image.Image]:
    """`n` views of one subject (same shape/colour/pattern/background) at varied sizes and positions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = random_scene(
            rng, shape=subject.shape, colour=subject.colour, pattern=subject.pattern,
            background=subject.background, background_style=subject.background_style,
        )
        out.append(render(replace(s)))
    return out
