"""Read a shapes-world image back into its attributes: analytic rules, plus a small CNN for the shape.

    >>> from lorabooth.world.evaluator import describe
    >>> describe(image)        # PIL image or HxWx3 uint8 array, any size (resized to 64x64)
    Attributes(shape='star', colour='purple', pattern='checkered', background='blue',
               background_style='plain', area=0.11)

How it reads an image:

1. background: every pixel of a 2-pixel border ring votes for the nearest palette tone (each
   named colour and its darker "secondary" tone); the winning colour is the background, and a
   border with both tones in its side columns is "striped" (horizontal bands).
2. foreground: pixels far (in RGB) from the background as drawn (its palette tones and the border
   pixels that voted for it, so an off-palette model background stays background); the largest
   4-connected blob is the shape. Too small a blob means "no shape" (shape None).
3. colour: the blob's interior pixels vote for their nearest primary tone.
4. pattern: the share of interior pixels nearer the colour's secondary tone than its primary
   one, how often that map flips between neighbours (a pattern flips every few pixels, model shading
   once) and how it correlates with itself along the two diagonals (diagonal stripes keep their
   value along one diagonal; checks along neither in particular; dots cover little area).
5. shape: `shape_classifier`, a ~110k-parameter CNN trained on damaged generator images, names it
   (only when step 2 found a shape). Hand-made blob descriptors read sharp generator images
   exactly but misread about one in ten images that went through the world model's VAE (rounded
   square corners, melted star points); the CNN reads those as a person does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from .generator import COLOURS, IMAGE_SIZE, secondary_tone
from .shape_classifier import classify_shapes

_NAMES = list(COLOURS)
_PRIMARY = np.array([COLOURS[c] for c in _NAMES], np.float32)
_SECONDARY = np.array([secondary_tone(c) for c in _NAMES], np.float32)
# Far enough from both background tones to be shape: the closest pair of tones the world can put
# side by side (a dark-yellow stripe next to a dark-orange check) is 49 apart.
_FOREGROUND_DISTANCE = 40.0
_TONES = np.concatenate([_PRIMARY, _SECONDARY])  # index i < 10: primary of colour i; else secondary of i-10


@dataclass(frozen=True)
class Attributes:
    """What the evaluator read from one image; `shape`/`colour`/`pattern` are None when no shape is found."""

    shape: str | None
    colour: str | None
    pattern: str | None
    background: str
    background_style: str
    area: float  # share of the image covered by the shape

    def to_dict(self) -> dict:
        return asdict(self)


def _as_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        img = image.convert("RGB")
        if img.size != (IMAGE_SIZE, IMAGE_SIZE):
            img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        return np.asarray(img, np.float32)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"describe() wants an RGB image (HxWx3), got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:  # floats in [0, 1], as diffusers' output_type="np" gives
        arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if arr.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        return _as_array(Image.fromarray(arr))
    return arr.astype(np.float32)


def _nearest(pixels: np.ndarray, tones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = ((pixels[..., None, :] - tones) ** 2).sum(-1)
    return d.argmin(-1), np.sqrt(d.min(-1))


def _background(arr: np.ndarray) -> tuple[int, str]:
    idx, _ = _nearest(_ring(arr), _TONES)
    colour = int(np.bincount(idx % len(_NAMES), minlength=len(_NAMES)).argmax())
    sides = np.concatenate([arr[:, :2].reshape(-1, 3), arr[:, -2:].reshape(-1, 3)])
    two = np.stack([_PRIMARY[colour], _SECONDARY[colour]])
    side_idx, _ = _nearest(sides, two)
    share = side_idx.mean()
    return colour, "striped" if 0.2 < share < 0.8 else "plain"


def _ring(arr: np.ndarray) -> np.ndarray:
    return np.concatenate([arr[:2].reshape(-1, 3), arr[-2:].reshape(-1, 3), arr[2:-2, :2].reshape(-1, 3),
                           arr[2:-2, -2:].reshape(-1, 3)])


def _background_samples(arr: np.ndarray, bg: int) -> np.ndarray:
    """The background's tones as drawn: the palette pair plus the border pixels that voted for it.

    Model output paints a background a little off its palette tone (a "cyan" that leans blue, a
    gradient across the image); measuring it at the border keeps such a background out of the
    shape's mask. Border pixels that voted for another colour (a shape touching the edge) are left out.
    """
    ring = _ring(arr)
    idx, _ = _nearest(ring, _TONES)
    own = ring[idx % len(_NAMES) == bg]
    own = own[:: max(1, len(own) // 64)]  # 64 samples are plenty and keep the distance map cheap
    return np.concatenate([np.stack([_PRIMARY[bg], _SECONDARY[bg]]), own])


def _neighbour_min(labels: np.ndarray) -> np.ndarray:
    out = labels.copy()
    np.minimum(out[1:], labels[:-1], out=out[1:])
    np.minimum(out[:-1], labels[1:], out=out[:-1])
    np.minimum(out[:, 1:], labels[:, :-1], out=out[:, 1:])
    np.minimum(out[:, :-1], labels[:, 1:], out=out[:, :-1])
    return out


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of `mask` (min-label propagation; fast enough at 64x64)."""
    if not mask.any():
        return mask.copy()
    big = mask.size + 1
    labels = np.where(mask, np.arange(mask.size).reshape(mask.shape), big)
    while True:
        nxt = np.where(mask, _neighbour_min(labels), big)
        if np.array_equal(nxt, labels):
            break
        labels = nxt
    ids, counts = np.unique(labels[mask], return_counts=True)
    return labels == ids[counts.argmax()]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Everything not reachable from the border through non-shape pixels belongs to the shape."""
    free = ~mask
    reached = np.zeros_like(mask)
    reached[0], reached[-1], reached[:, 0], reached[:, -1] = free[0], free[-1], free[:, 0], free[:, -1]
    while True:
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= free
        if np.array_equal(grown, reached):
            return ~reached
        reached = grown


def _erode(mask: np.ndarray) -> np.ndarray:
    m = mask.copy()
    m[1:] &= mask[:-1]
    m[:-1] &= mask[1:]
    m[:, 1:] &= mask[:, :-1]
    m[:, :-1] &= mask[:, 1:]
    return m


def _foreground(arr: np.ndarray, bg: int) -> np.ndarray:
    """The shape's filled mask: a rough cut by distance to the background, then a trimmed rim.

    The rough cut takes every pixel clearly unlike the background, which on blurred model output
    swells the shape and rounds its corners; trimming rim pixels that are nearer the background's
    tones than the shape's puts the edge back at the midpoint, where a sharp image has it.
    """
    _, bg_dist = _nearest(arr, _background_samples(arr, bg))
    blob = _largest_blob(bg_dist > _FOREGROUND_DISTANCE)
    if blob.sum() < 8:
        return blob
    core = _erode(blob)
    core = core if core.sum() >= 4 else blob
    median = np.median(arr[core], axis=0)
    near, _ = _nearest(median, _PRIMARY)
    shape_tones = np.stack([median, _PRIMARY[near], _SECONDARY[near]])
    _, shape_dist = _nearest(arr, shape_tones)
    # Trim only the rim: a rim pixel nearer the background than the shape is blur, not shape.
    filled = _fill_holes(blob)
    rim = filled & ~_erode(_erode(filled))
    kept = filled & ~(rim & (bg_dist <= shape_dist))
    trimmed = _largest_blob(kept)
    return _fill_holes(trimmed) if trimmed.sum() >= 8 else filled


def _pattern(arr: np.ndarray, interior: np.ndarray, colour: int) -> str:
    two = np.stack([_PRIMARY[colour], _SECONDARY[colour]])
    idx, _ = _nearest(arr, two)
    sec = (idx == 1) & interior
    share = sec.sum() / max(1, interior.sum())
    if share < 0.06:
        return "plain"
    # A drawn pattern flips tone every few pixels; model shading (a darker side, a soft gradient) flips
    # once across the shape. Too few flips per pixel, for the share of dark tone, means plain.
    h = interior[:, 1:] & interior[:, :-1]
    v = interior[1:] & interior[:-1]
    flips = ((sec[:, 1:] != sec[:, :-1])[h].mean() + (sec[1:] != sec[:-1])[v].mean()) / 2 if h.any() and v.any() else 0.0
    if flips < (0.09 if share >= 0.35 else 0.045):
        return "plain"
    # Dots are ~3 px across and vanish under one erosion; checks (6 px) and stripes mostly survive it.
    survival = (_erode(sec | ~interior) & sec).sum() / max(1, sec.sum())  # the outline is no edge of a dot
    if share < 0.35 and survival < 0.3:
        return "dotted"
    # Diagonal stripes keep their value along y = -x and flip along y = x; checks treat both alike.
    along = (_agree(sec, interior, 1, -1) + _agree(sec, interior, 2, -2)) / 2
    across = (_agree(sec, interior, 1, 1) + _agree(sec, interior, 2, 2)) / 2
    return "striped" if along - across > 0.25 else "checkered"


def _agree(sec: np.ndarray, interior: np.ndarray, dy: int, dx: int) -> float:
    """Share of interior pixels whose pattern value equals that of the pixel (dy, dx) away."""
    h, w = sec.shape
    ya, yb = slice(dy, h), slice(0, h - dy)
    xa, xb = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    both = interior[ya, xa] & interior[yb, xb]
    return float((sec[ya, xa] == sec[yb, xb])[both].mean()) if both.any() else 0.0


def describe(image) -> Attributes:
    """Attributes of one shapes-world image (PIL image or HxWx3 array; uint8 or floats in [0, 1])."""
    arr = _as_array(image)
    bg, style = _background(arr)
    mask = _foreground(arr, bg)
    area = float(mask.mean())
    if mask.sum() < 20:  # fewer pixels than the smallest shape the world draws
        return Attributes(None, None, None, _NAMES[bg], style, area)
    interior = _erode(mask)
    if interior.sum() < 8:
        interior = mask
    # Only pixels nearest a primary tone vote: a pattern's dark tone can sit near another colour.
    idx, _ = _nearest(arr[interior], _TONES)
    votes = idx[idx < len(_NAMES)] if (idx < len(_NAMES)).any() else idx % len(_NAMES)
    colour = int(np.bincount(votes, minlength=len(_NAMES)).argmax())
    shape = classify_shapes([arr])[0]
    return Attributes(shape, _NAMES[colour], _pattern(arr, interior, colour), _NAMES[bg], style, area)
