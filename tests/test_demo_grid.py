"""The demo's before/after grid: one header row of prompts, then base and adapter rows on the same seeds."""

from PIL import Image

from lorabooth.demo import CELL, HEADER, ROW_LABEL, sample_grid


def _solid(colour):
    def generate(prompts, seed):
        # the seed shifts the green channel, so the test also sees which seed each column got
        return [Image.new("RGB", (64, 64), (colour[0], seed % 256, colour[2])) for _ in prompts]
    return generate


def test_rows_are_models_and_columns_share_seeds():
    prompts = ["a photo of sks star", "a photo of a star"]
    grid = sample_grid(_solid((200, 0, 10)), _solid((10, 0, 200)), prompts, seed=3, per_prompt=2)
    assert grid.size == (ROW_LABEL + 4 * CELL, HEADER + 2 * CELL)
    for col in range(4):
        x = ROW_LABEL + col * CELL + CELL // 2
        seed = 3 + 1000 * (col // 2)
        assert grid.getpixel((x, HEADER + CELL // 2)) == (200, seed % 256, 10)  # base row
        assert grid.getpixel((x, HEADER + CELL + CELL // 2)) == (10, seed % 256, 200)  # adapter row
    header = grid.crop((ROW_LABEL, 0, grid.width, HEADER)).convert("L")
    assert min(header.getdata()) < 128  # the prompts are written above their columns
