"""Bad files give one clear error type (``FormatError``, a ``ValueError``) naming the problem; nothing is written."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lorabooth.adapters.formats import (
    FormatError,
    LoraFile,
    LoraModule,
    check_against_model,
    detect_format,
    load_lora,
    save_lora,
)
from safetensors.torch import save_file

from tests.formats.conftest import random_lora


@pytest.fixture(scope="module")
def kohya_bytes(unet, tmp_path_factory):
    lora = random_lora({"unet": unet}, vary=True)
    lora.modules = dict(list(sorted(lora.modules.items()))[:6])
    path = tmp_path_factory.mktemp("k") / "k.safetensors"
    save_lora(lora, path, to="kohya")
    return path.read_bytes()


def test_truncated_file(kohya_bytes, tmp_path):
    for cut in (0, 5, 100, len(kohya_bytes) // 2, len(kohya_bytes) - 1):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(kohya_bytes[:cut])
        with pytest.raises(FormatError, match="truncated|too short|corrupt"):
            load_lora(path)


def test_not_a_lora(tmp_path):
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, tmp_path / "ckpt.safetensors")
    with pytest.raises(FormatError, match="not a LoRA file lorabooth knows.*kohya"):
        load_lora(tmp_path / "ckpt.safetensors")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FormatError, match="neither adapter_config.json"):
        load_lora(tmp_path / "folder")
    with pytest.raises(FormatError, match="no such file"):
        load_lora(tmp_path / "missing.safetensors")


def test_nan_inf_refused_on_read_and_write(tmp_path, unet):
    lora = random_lora({"unet": unet}, vary=False)
    key = next(iter(lora.modules))
    lora.modules[key].up[0, 0] = float("nan")
    for fmt, out in (("kohya", tmp_path / "x.safetensors"), ("peft", tmp_path / "p"), ("diffusers", tmp_path / "d")):
        with pytest.raises(FormatError, match="NaN or Inf"):
            save_lora(lora, out, to=fmt)
        assert not out.exists() and not list(tmp_path.glob("**/*.tmp"))
    raw = {"lora_unet_x.lora_down.weight": torch.ones(2, 4), "lora_unet_x.lora_up.weight": torch.ones(4, 2),
           "lora_unet_x.alpha": torch.tensor(float("inf"))}
    raw["lora_unet_x.lora_up.weight"][1, 1] = float("inf")
    save_file(raw, tmp_path / "inf.safetensors")
    with pytest.raises(FormatError, match="NaN or Inf"):
        load_lora(tmp_path / "inf.safetensors")


def test_keys_matching_nothing_name_the_base():
    xl = LoraFile(source="xl_lora.safetensors")
    xl.modules[("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k")] = LoraModule(
        torch.zeros(4, 2048), torch.zeros(640, 4), 4.0)
    xl.modules[("text_encoder_2", "encoder.layers.0.self_attn.q_proj")] = LoraModule(
        torch.zeros(4, 1280), torch.zeros(1280, 4), 4.0)
    sd1_names = {"unet": ["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"],
                 "text_encoder": ["encoder.layers.0.self_attn.q_proj"]}
    with pytest.raises(FormatError, match="looks like a SDXL LoRA"):
        check_against_model(xl, sd1_names)
    llm = LoraFile(source="llm")
    llm.modules[("model", "model.layers.0.self_attn.q_proj")] = LoraModule(torch.zeros(2, 8), torch.zeros(8, 2), 2.0)
    with pytest.raises(FormatError, match="looks like a LLM LoRA"):
        check_against_model(llm, sd1_names)
    assert check_against_model(xl, {"unet": [next(iter(xl.modules))[1]]}) == [
        "text_encoder_2.encoder.layers.0.self_attn.q_proj"]


def test_corrupt_peft_config(tmp_path, unet):
    lora = random_lora({"unet": unet}, vary=False)
    save_lora(lora, tmp_path / "p", to="peft")
    (tmp_path / "p" / "adapter_config.json").write_text("{not json")
    with pytest.raises(FormatError, match="adapter_config.json: not readable JSON"):
        load_lora(tmp_path / "p")
    (tmp_path / "p" / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(FormatError, match="not LoRA"):
        load_lora(tmp_path / "p")


def test_sgm_named_kohya_file_reads_as_diffusers_names(tmp_path):
    raw = {}
    for name in ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", "lora_te2_text_model_encoder_layers_3_mlp_fc1"):
        raw[f"{name}.lora_down.weight"] = torch.randn(2, 8)
        raw[f"{name}.lora_up.weight"] = torch.randn(8, 2)
        raw[f"{name}.alpha"] = torch.tensor(1.0)
    save_file(raw, tmp_path / "xl.safetensors", metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    lora = load_lora(tmp_path / "xl.safetensors")
    assert set(lora.modules) == {("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
                                 ("text_encoder_2", "encoder.layers.3.mlp.fc1")}
    assert detect_format(tmp_path / "xl.safetensors") == "kohya"


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf[:cut] if cut is not None else buf)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       header_bias=st.booleans(), cut=st.one_of(st.none(), st.integers(0, 4000)))
def test_fuzz_mutated_files_give_only_format_errors(kohya_bytes, tmp_path, edits, header_bias, cut):
    if header_bias:  # most damage that matters is in the JSON header
        n = struct.unpack("<Q", kohya_bytes[:8])[0] + 8
        edits = [(pos % n, v) for pos, v in edits]
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(_mutate(kohya_bytes, edits, cut))
    try:
        lora = load_lora(path)
    except FormatError:
        return
    assert all(torch.isfinite(m.down).all() and torch.isfinite(m.up).all() for m in lora.modules.values())


@settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.dictionaries(st.text(max_size=12), st.one_of(
    st.integers(-5, 10**12), st.text(max_size=8), st.lists(st.integers(-3, 10**9), max_size=4),
    st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "I8", "XX"]),
                           "shape": st.lists(st.integers(-2, 10**6), max_size=3),
                           "data_offsets": st.lists(st.integers(-2, 10**7), max_size=3)})), max_size=4),
       body=st.binary(max_size=64))
def test_fuzz_random_headers(tmp_path, header, body):
    blob = json.dumps(header).encode()
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + body)
    with pytest.raises(FormatError):
        load_lora(path)


def test_llm_adapter_cannot_become_a_kohya_file(tmp_path):
    llm = LoraFile(source="llm")
    llm.modules[("model", "model.layers.0.self_attn.q_proj")] = LoraModule(torch.ones(2, 8), torch.ones(8, 2), 2.0)
    with pytest.raises(FormatError, match="--to peft"):
        save_lora(llm, tmp_path / "x.safetensors", to="kohya")
    with pytest.raises(FormatError, match="--to peft"):
        save_lora(llm, tmp_path / "d", to="diffusers")
    assert not any(tmp_path.iterdir())
    save_lora(llm, tmp_path / "p", to="peft")
    assert load_lora(tmp_path / "p").modules.keys() == llm.modules.keys()
