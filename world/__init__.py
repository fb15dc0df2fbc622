"""The shapes world: a seeded image generator, the world model's tokenizer, an analytic evaluator and
DreamBooth metrics. See `generator`, `tokenizer`, `evaluator`, `metrics` and `checks`."""

from .evaluator import Attributes, describe
from .generator import COLOURS, HELD_OUT_COMBOS, PATTERNS, SHAPES, Scene, caption, render
from .metrics import SubjectSpec, evaluate_dreambooth, prompt_adherence, prompt_adherence_report

__all__ = [
    "Attributes", "COLOURS", "HELD_OUT_COMBOS", "PATTERNS", "SHAPES", "Scene", "SubjectSpec", "caption",
    "describe", "evaluate_dreambooth", "prompt_adherence", "prompt_adherence_report", "render",
]
