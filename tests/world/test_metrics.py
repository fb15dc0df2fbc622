"""The metrics' logic, checked against generate functions whose answers we know (no model needed)."""

import math
from pathlib import Path

import numpy as np
import pytest
from lorabooth.world.generator import COLOURS, Scene, render
from lorabooth.world.metrics import (
    SubjectSpec,
    adherence_prompts,
    evaluate_dreambooth,
    normalized_entropy,
    prompt_adherence_report,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets"
SUBJECT = SubjectSpec(class_word="star", shape="star", colour="purple", pattern="checkered")


def _parse(prompt: str):
    words = prompt.replace("a photo of ", "").split()
    bg = words[words.index("on") + 2] if "on" in words else "white"
    return words, bg


def world_fn(subject_leaks_into_class: bool):
    """Draws what a prompt asks for; 'sks star' is the subject; class prompts get random colours."""

    def generate(prompts, seed):
        out = []
        for i, p in enumerate(prompts):
            rng = np.random.default_rng(seed + i)
            words, bg = _parse(p)
            if "sks" in words:
                scene = Scene("star", "purple", "checkered", background=bg)
            elif words[:2] == ["a", "star"] and subject_leaks_into_class:
                scene = Scene("star", "purple", "checkered")
            elif words[:2] == ["a", "star"]:
                colour = list(COLOURS)[rng.integers(len(COLOURS))]
                scene = Scene("star", colour, background="white" if colour != "white" else "black")
            else:  # "a {colour} {shape}"
                colour, shape = words[1], words[2]
                scene = Scene(shape, colour, background="white" if colour != "white" else "black")
            out.append(render(scene))
        return out

    return generate


def test_prompt_adherence_is_one_for_a_perfect_world_and_low_for_a_colour_blind_one():
    assert prompt_adherence_report(world_fn(False), n=24)["prompt_adherence"] == 1.0

    def always_red(prompts, seed):
        return [render(Scene(_parse(p)[0][2], "red")) for p in prompts]

    rep = prompt_adherence_report(always_red, n=30)
    assert rep["shape_accuracy"] == 1.0
    assert rep["colour_accuracy"] < 0.3 and rep["prompt_adherence"] == rep["colour_accuracy"]


def test_adherence_prompts_cover_seen_and_held_out_combinations():
    seen = {(c, s) for _, c, s in adherence_prompts(200, seed=1)}
    held = {(c, s) for _, c, s in adherence_prompts(8, seed=1, held_out=True)}
    assert len(seen) == 56 and len(held) == 4 and not seen & held


def test_dreambooth_metrics_separate_a_preserved_prior_from_a_drifted_one():
    good = evaluate_dreambooth(world_fn(False), SUBJECT, n=16, seed=0)
    bad = evaluate_dreambooth(world_fn(True), SUBJECT, n=16, seed=0)
    assert good["subject_fidelity"] == 1.0 and good["composition"] == 1.0
    assert good["pres"] == 0.0 and good["pres_pattern"] == 0.0 and good["div"] > 0.6
    assert bad["pres"] == 1.0 and bad["div"] == 0.0
    assert good["class_shape_rate"] == bad["class_shape_rate"] == 1.0


def test_normalized_entropy_bounds():
    assert normalized_entropy(["a"] * 5, 10) == 0.0
    assert math.isclose(normalized_entropy(list("abcdefghij"), 10), 1.0)


def test_subject_json_round_trip_and_errors(tmp_path):
    subj = SubjectSpec.from_json(ASSETS / "demo-subject" / "subject.json")
    assert subj.instance_prompt == "a photo of sks star" and subj.class_prompt == "a photo of a star"
    assert (subj.shape, subj.colour, subj.pattern) == ("star", "purple", "checkered")
    bad = tmp_path / "subject.json"
    bad.write_text('{"class_word": "star"}')
    with pytest.raises(ValueError, match="subject.json"):
        SubjectSpec.from_json(bad)


def test_background_metrics_count_samples_on_the_subjects_backdrop():
    def on(background):
        return lambda prompts, seed: [render(Scene("star", "red", background=background)) for _ in prompts]

    assert SUBJECT.background == "white"
    white, blue = (evaluate_dreambooth(on(bg), SUBJECT, n=4) for bg in ("white", "blue"))
    assert white["pres_background"] == white["subject_background"] == 1.0
    assert blue["pres_background"] == blue["subject_background"] == 0.0
