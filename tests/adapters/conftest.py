"""Fixtures for the adapter-core tests; the models and helpers live in ``lora_cases``."""

from __future__ import annotations

import pytest

from tests.adapters.lora_cases import CASES, Pair, build_pair


# The UNet's first forward pays several seconds of one-off kernel set-up on a CPU: mark it slow.
@pytest.fixture(params=[pytest.param(n, marks=pytest.mark.slow) if n == "unet" else n for n in CASES])
def pair(request) -> Pair:
    return build_pair(CASES[request.param])
