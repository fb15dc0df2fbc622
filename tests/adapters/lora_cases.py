"""Tiny models built from configs, and the same LoRA model built twice: once with peft (the
oracle) and once with lorabooth, with identical base and adapter weights.

A uniquely named module (not ``conftest``) so that test files can import it by name in a suite
where every test folder has its own conftest."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lorabooth.adapters as lb
import peft  # the test extra pins it; lorabooth itself never imports peft
import torch

warnings.filterwarnings("ignore", message=".*token_id.*")


@dataclass
class Case:
    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[], dict[str, Any]]
    output: Callable[[Any], torch.Tensor]
    lora: dict[str, Any] = field(default_factory=dict)


def _ids(batch: int = 2, length: int = 8, vocab: int = 100) -> torch.Tensor:
    return torch.randint(1, vocab, (batch, length), generator=torch.Generator().manual_seed(7))


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=32))


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=100))


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                    intermediate_size=37, vocab_size=100, num_labels=3))


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                                               vocab_size=100, decoder_start_token_id=0))


def _vit():
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                               intermediate_size=37, image_size=16, patch_size=4, num_labels=3))


def _segformer():
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    return SegformerForSemanticSegmentation(SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2],
        decoder_hidden_size=32, num_labels=3, patch_sizes=[3, 3], strides=[2, 2]))


def _clip():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, vocab_size=100, max_position_embeddings=16))


def tiny_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )


def _unet_inputs() -> dict[str, Any]:
    g = torch.Generator().manual_seed(3)
    return {"sample": torch.randn(2, 4, 8, 8, generator=g), "timestep": torch.tensor([10, 500]),
            "encoder_hidden_states": torch.randn(2, 5, 32, generator=g)}


def _pixels(size: int = 16) -> dict[str, Any]:
    return {"pixel_values": torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))}


CASES: dict[str, Case] = {c.name: c for c in [
    Case("gpt2", _gpt2, lambda: {"input_ids": _ids()}, lambda o: o.logits,
         {"task_type": "CAUSAL_LM", "target_modules": ["c_attn", "c_proj"]}),
    # target_modules=None exercises the default table (same as PEFT's for LLaMA, BERT and T5).
    Case("llama", _llama, lambda: {"input_ids": _ids()}, lambda o: o.logits, {"task_type": "CAUSAL_LM"}),
    Case("bert", _bert, lambda: {"input_ids": _ids()}, lambda o: o.logits, {"task_type": "SEQ_CLS"}),
    Case("t5", _t5, lambda: {"input_ids": _ids(), "decoder_input_ids": _ids(length=5)}, lambda o: o.logits,
         {"task_type": "SEQ_2_SEQ_LM"}),
    Case("vit", _vit, _pixels, lambda o: o.logits,
         {"target_modules": ["q_proj", "v_proj", "query", "value"], "modules_to_save": ["classifier"]}),
    Case("segformer", _segformer, lambda: _pixels(32), lambda o: o.logits,
         {"target_modules": ["q_proj", "v_proj", "query", "value"], "modules_to_save": ["decode_head"]}),
    Case("clip", _clip, lambda: {"input_ids": _ids(length=6)}, lambda o: o.last_hidden_state,
         {"target_modules": ["q_proj", "k_proj", "v_proj", "out_proj"]}),
    Case("unet", tiny_unet, _unet_inputs, lambda o: o.sample,
         {"target_modules": ["to_q", "to_k", "to_v", "to_out.0", "conv1", "proj_in"]}),
]}


def randomize_adapters(model: torch.nn.Module, seed: int = 11, scale: float = 0.2) -> None:
    """Give every trainable tensor non-zero random values (fresh LoRA B is zero: useless for equality)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)


@dataclass
class Pair:
    case: Case
    base: torch.nn.Module  # an untouched copy of the base model
    theirs: Any  # peft.PeftModel
    ours: lb.PeftModel
    inputs: dict[str, Any]

    def outputs(self, model) -> torch.Tensor:
        with torch.no_grad():
            return self.case.output(model(**self.inputs))


_BASES: dict[str, torch.nn.Module] = {}


def base_model(case: Case) -> torch.nn.Module:
    """A fresh copy of the case's seeded base model (built once per session: building is the slow part)."""
    if case.name not in _BASES:
        torch.manual_seed(0)
        _BASES[case.name] = case.build().eval()
    return copy.deepcopy(_BASES[case.name])


def build_pair(case: Case, r: int = 4, lora_alpha: int = 8, **extra: Any) -> Pair:
    base = base_model(case)
    kwargs = {"r": r, "lora_alpha": lora_alpha, **case.lora, **extra}
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**kwargs)).eval()
    ours = lb.get_peft_model(copy.deepcopy(base), lb.LoraConfig(**kwargs)).eval()
    randomize_adapters(theirs)
    lb.set_peft_model_state_dict(ours, peft.get_peft_model_state_dict(theirs))
    return Pair(case, base, theirs, ours, case.inputs())
