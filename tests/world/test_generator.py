import numpy as np
import pytest
from lorabooth.world.generator import (
    COLOURS,
    HELD_OUT_COMBOS,
    IMAGE_SIZE,
    SHAPES,
    Scene,
    caption,
    pretraining_caption,
    pretraining_dataset,
    pretraining_scene,
    random_scene,
    render,
)


def test_same_seed_same_bytes_and_different_seed_differs():
    a = [(np.asarray(im).tobytes(), s) for im, s in pretraining_dataset(8, seed=3)]
    b = [(np.asarray(im).tobytes(), s) for im, s in pretraining_dataset(8, seed=3)]
    c = [(np.asarray(im).tobytes(), s) for im, s in pretraining_dataset(8, seed=4)]
    assert a == b
    assert a != c


def test_images_are_64px_rgb_and_show_the_colours_asked_for():
    im = render(Scene("square", "red", background="blue", radius=20))
    arr = np.asarray(im)
    assert im.mode == "RGB" and arr.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert tuple(arr[32, 32]) == COLOURS["red"]  # centre: the shape
    assert tuple(arr[1, 1]) == COLOURS["blue"]  # corner: the background


def test_pretraining_never_shows_patterns_or_held_out_combinations():
    rng = np.random.default_rng(0)
    rng1 = np.random.default_rng(1)
    scenes = [pretraining_scene(rng1) for _ in range(3000)]
    assert {s.pattern for s in scenes} == {"plain"}
    assert not {(s.colour, s.shape) for s in scenes} & HELD_OUT_COMBOS
    assert {s.shape for s in scenes} == set(SHAPES)
    # ... while the generator itself can draw them.
    drawn = {random_scene(rng).pattern for _ in range(200)}
    assert drawn == {"plain", "checkered", "dotted", "striped"}


def test_captions_name_the_attributes_and_some_are_dropped_for_guidance():
    s = Scene("star", "purple", pattern="checkered", background="blue", background_style="striped")
    assert caption(s) == "a photo of a purple checkered star on a striped blue background"
    rng = np.random.default_rng(0)
    caps = [pretraining_caption(Scene("heart", "red"), rng) for _ in range(2000)]
    assert 0.07 < caps.count("") / len(caps) < 0.13
    assert "a photo of a heart" in caps and "a photo of a red heart" in caps


def test_unknown_attribute_is_a_clear_error():
    with pytest.raises(ValueError, match="shape='hexagram'"):
        Scene("hexagram", "red")
