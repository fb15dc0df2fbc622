"""Mixing equals peft 0.21's ``add_weighted_adapter`` (same inputs, same seed) within 1e-5, on the model and on
files; runtime mixing, fuse/unfuse, resize and extraction do what they promise, with measured errors."""

from __future__ import annotations

import copy
import time

import peft
import pytest
import torch
from lorabooth.adapters import LoraConfig, get_peft_model
from lorabooth.adapters.formats import LoraFile, LoraModule
from lorabooth.adapters.mixing import (
    COMBINATION_TYPES,
    AdapterMixer,
    MixError,
    add_weighted_adapter,
    extract_lora,
    fuse,
    lora_layers,
    mix_loras,
    resize_lora,
    unfuse,
)
from torch import nn


class Net(nn.Module):
    """Every layer kind add_weighted_adapter handles: linear, 3x3 conv, 1x1 conv, embedding."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.lin1 = nn.Linear(16, 24)
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.pw = nn.Conv2d(8, 8, 1)
        self.lin2 = nn.Linear(24, 16)

    def forward(self, ids, img):
        h = self.lin2(torch.relu(self.lin1(self.emb(ids))))
        return h.sum() + self.pw(self.conv(img)).sum(), h, self.pw(self.conv(img))


TARGETS = ["emb", "lin1", "conv", "pw", "lin2"]


def _pair(ranks=(4, 4), alphas=(8, 3), seed=0, rslora=False):
    """The same two adapters in a peft model and in a lorabooth model (copied tensor for tensor)."""
    torch.manual_seed(seed)
    base = Net()
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=ranks[0], lora_alpha=alphas[0], target_modules=TARGETS, use_rslora=rslora))
    theirs.add_adapter("b", peft.LoraConfig(r=ranks[1], lora_alpha=alphas[1], target_modules=TARGETS[1:],
                                            use_rslora=rslora))
    ours = get_peft_model(copy.deepcopy(base), LoraConfig(r=ranks[0], lora_alpha=alphas[0], target_modules=TARGETS,
                                                          use_rslora=rslora))
    ours.add_adapter("b", LoraConfig(r=ranks[1], lora_alpha=alphas[1], target_modules=TARGETS[1:],
                                     use_rslora=rslora))
    g = torch.Generator().manual_seed(seed + 1)
    ours_layers = dict(lora_layers(ours))
    for name, layer in lora_layers(theirs):
        mine = ours_layers[name]
        for adapter in ("default", "b"):
            for attr in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"):
                container = getattr(layer, attr)
                if adapter not in container:
                    continue
                p = container[adapter]
                p = p.weight if hasattr(p, "weight") else p
                p.data = torch.randn(p.shape, generator=g) * 0.3
                q = getattr(mine, attr)[adapter]
                (q.weight if hasattr(q, "weight") else q).data = p.data.clone()
    return base, theirs, ours


def _factors(model, adapter):
    out = {}
    for name, layer in lora_layers(model):
        if adapter in layer.lora_A:
            out[name] = (layer.lora_A[adapter].weight, layer.lora_B[adapter].weight)
        elif adapter in getattr(layer, "lora_embedding_A", {}):
            out[name] = (layer.lora_embedding_A[adapter], layer.lora_embedding_B[adapter])
    return out


CASES = [(t, {}) for t in ("linear", "cat", "svd")] + [
    ("svd", {"svd_rank": 3, "svd_clamp": 0.9}),
    ("ties", {"density": 0.5}), ("ties", {"density": 0.3, "majority_sign_method": "frequency"}),
    ("ties_svd", {"density": 0.6}), ("dare_linear", {"density": 0.5}), ("dare_ties", {"density": 0.4}),
    ("dare_linear_svd", {"density": 0.7}), ("dare_ties_svd", {"density": 0.5, "svd_rank": 2}),
    ("magnitude_prune", {"density": 0.5}), ("magnitude_prune_svd", {"density": 0.5}),
]


@pytest.mark.parametrize(("combination_type", "kwargs"), CASES, ids=[f"{t}-{k}" for t, k in CASES])
def test_add_weighted_adapter_equals_peft(combination_type, kwargs):
    _, theirs, ours = _pair(rslora=combination_type == "cat")
    weights = [0.7, -0.4]
    torch.manual_seed(123)
    theirs.add_weighted_adapter(["default", "b"], weights, "mix", combination_type=combination_type, **kwargs)
    torch.manual_seed(123)
    report = ours.add_weighted_adapter(["default", "b"], weights, "mix", combination_type=combination_type,
                                       **kwargs) if hasattr(ours, "add_weighted_adapter") else add_weighted_adapter(
        ours, ["default", "b"], weights, "mix", combination_type=combination_type, **kwargs)
    want, got = _factors(theirs, "mix"), _factors(ours, "mix")
    assert set(want) == set(got) and len(got) == len(TARGETS)
    for name in want:
        for w, g in zip(want[name], got[name]):
            assert w.shape == g.shape, name
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5, msg=f"{combination_type} {name}")
    if report is not None and combination_type.endswith("svd"):
        assert report.errors and all(0 <= e < 1.5 for e in report.errors.values())
    # the new adapter computes like peft's too
    theirs.set_adapter("mix")
    ours.set_adapter("mix")
    ids, img = torch.randint(0, 20, (2, 5)), torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, img)[0], theirs(ids, img)[0], atol=1e-4, rtol=1e-5)


def test_svd_error_is_reported_and_exact_when_rank_suffices():
    _, _, ours = _pair(ranks=(2, 3))
    full = add_weighted_adapter(ours, ["default", "b"], [1.0, 1.0], "full", combination_type="svd", svd_rank=5)
    low = add_weighted_adapter(ours, ["default", "b"], [1.0, 1.0], "low", combination_type="svd", svd_rank=2)
    assert full.max_error < 1e-5  # rank 4 + rank 6 fits in rank 10 (up to float error)
    assert low.mean_error > 0.05 and "approximation error" in low.summary()


def test_every_type_is_offered():
    assert len(COMBINATION_TYPES) == 11


def test_equal_rank_types_refuse_different_ranks_and_suggest_cat_or_svd():
    _, _, ours = _pair(ranks=(4, 6))
    with pytest.raises(MixError, match=r"equal rank.*'cat'.*'svd'"):
        add_weighted_adapter(ours, ["default", "b"], [1, 1], "x", combination_type="ties", density=0.5)
    with pytest.raises(MixError, match="needs density"):
        add_weighted_adapter(ours, ["default", "b"], [1, 1], "x", combination_type="ties_svd")
    with pytest.raises(ValueError, match="no adapter"):
        add_weighted_adapter(ours, ["default", "nope"], [1, 1], "x", combination_type="cat")


def _model_out(model, ids, img):
    with torch.no_grad():
        out = model(ids, img)
    return out[1], out[2]


def _reference(base, ours, weights):
    """base weights + sum_i w_i * delta_i, computed from the adapters' factors."""
    ref = copy.deepcopy(base)
    layers = dict(lora_layers(ours))
    with torch.no_grad():
        for name, module in ref.named_modules():
            layer = layers.get(f"base_model.model.{name}")
            if layer is None:
                continue
            for adapter, w in weights.items():
                if adapter in layer.r:
                    module.weight += w * layer.get_delta_weight(adapter)
    return ref


def test_runtime_mixing_and_fuse_unfuse():
    base, _, ours = _pair(ranks=(4, 6), alphas=(8, 3))
    ids, img = torch.randint(0, 20, (2, 5)), torch.randn(1, 4, 6, 6)
    grads = {n: p.requires_grad for n, p in ours.named_parameters()}
    mixer = AdapterMixer(ours)
    for weights in ({"default": 0.5, "b": 1.2}, {"default": 1.0, "b": -0.3}, {"b": 0.8}):
        mixer.set_adapters(list(weights), list(weights.values()))
        got = _model_out(ours, ids, img)
        # the reference uses unscaled deltas; the mixer must not have touched the stored scalings' base
        mixer.set_adapters(list(weights), [1.0] * len(weights))
        want = _model_out(_reference(base, ours, weights), ids, img)
        mixer.set_adapters(list(weights), list(weights.values()))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    start = time.perf_counter()
    for i in range(50):
        mixer.set_adapters(["default", "b"], [i / 50, 1 - i / 50])
    per_switch_ms = (time.perf_counter() - start) / 50 * 1e3
    assert {n: p.requires_grad for n, p in ours.named_parameters()} == grads  # mixing never changes training
    print(f"runtime mix switch: {per_switch_ms:.3f} ms")
    assert per_switch_ms < 50

    mixer.set_adapters(["default", "b"], [1.0, 1.0])
    ref = _model_out(_reference(base, ours, {"default": 0.35, "b": 0.7}), ids, img)
    mixer.set_adapters(["default", "b"], [0.5, 1.0])
    mixed = _model_out(ours, ids, img)
    before = {n: p.detach().clone() for n, p in ours.named_parameters() if "lora_" not in n}
    fuse(ours, ["default", "b"], scale=0.7)
    fused = _model_out(ours, ids, img)
    assert any(not torch.equal(p, before[n]) for n, p in ours.named_parameters() if "lora_" not in n)
    for g, w in zip(fused, ref):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    unfuse(ours)
    for n, p in ours.named_parameters():
        if "lora_" not in n:
            torch.testing.assert_close(p, before[n], atol=1e-6, rtol=0)
    for g, w in zip(_model_out(ours, ids, img), mixed):  # the mix is back as it was
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)


def _file_pair(ranks=(4, 4)):
    g = torch.Generator().manual_seed(5)
    files = []
    for i, r in enumerate(ranks):
        lora = LoraFile(source=f"lora{i}")
        lora.modules[("unet", "down_blocks.0.attentions.0.proj_in")] = LoraModule(
            torch.randn(r, 32, generator=g), torch.randn(32, r, generator=g), alpha=2.0 + i)
        lora.modules[("unet", "down_blocks.0.resnets.0.conv1")] = LoraModule(
            torch.randn(r, 32, 3, 3, generator=g), torch.randn(32, r, 1, 1, generator=g), alpha=8.0)
        files.append(lora)
    return files


@pytest.mark.parametrize("combination_type", ["linear", "cat", "svd", "ties", "magnitude_prune"])
def test_file_mix_equals_model_mix(combination_type):
    """mix_loras on files gives the factors add_weighted_adapter gives on a model holding the same adapters."""
    files = _file_pair()

    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(32, 32)
            self.conv = nn.Conv2d(32, 32, 3, padding=1)

    model = peft.get_peft_model(Host(), peft.LoraConfig(r=4, lora_alpha=2.0, target_modules=["lin", "conv"]))
    model.add_adapter("b", peft.LoraConfig(r=4, lora_alpha=3.0, target_modules=["lin", "conv"],
                                           alpha_pattern={"conv": 8.0}))
    model.peft_config["default"].alpha_pattern = {"conv": 8.0}
    for (_, path), name in zip(files[0].modules, ("lin", "conv")):
        layer = model.base_model.model.get_submodule(name)
        layer.scaling["default"] = 8.0 / 4 if name == "conv" else 2.0 / 4
        for adapter, f in zip(("default", "b"), files):
            layer.lora_A[adapter].weight.data = f.modules[("unet", path)].down.clone()
            layer.lora_B[adapter].weight.data = f.modules[("unet", path)].up.clone()
    kwargs = {"density": 0.5} if combination_type in ("ties", "magnitude_prune") else {}
    model.add_weighted_adapter(["default", "b"], [0.6, 0.9], "mix", combination_type=combination_type, **kwargs)
    mixed, report = mix_loras(files, [0.6, 0.9], combination_type, **kwargs)
    for (_, path), name in zip(files[0].modules, ("lin", "conv")):
        layer = model.base_model.model.get_submodule(name)
        mod = mixed.modules[("unet", path)]
        torch.testing.assert_close(mod.down, layer.lora_A["mix"].weight, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mod.up, layer.lora_B["mix"].weight, atol=1e-5, rtol=1e-5)
        assert mod.scale() == 1.0
    assert report.layers == 2


def test_file_mix_refuses_bad_inputs():
    a, b = _file_pair(ranks=(4, 6))
    with pytest.raises(MixError, match="'cat'.*'svd'"):
        mix_loras([a, b], [1, 1], "linear")
    xl = LoraFile(source="xl.safetensors")
    xl.modules[("text_encoder_2", "encoder.layers.0.self_attn.q_proj")] = LoraModule(
        torch.zeros(4, 32), torch.zeros(32, 4), 4.0)
    xl.modules[("unet", "down_blocks.0.attentions.0.proj_in")] = a.modules[("unet", "down_blocks.0.attentions.0.proj_in")]
    sd1 = copy.deepcopy(a)
    sd1.modules[("unet", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k")] = LoraModule(
        torch.zeros(4, 768), torch.zeros(320, 4), 4.0)
    with pytest.raises(MixError, match="different base models.*SD1.*SDXL"):
        mix_loras([sd1, xl], [1, 1], "cat")
    with pytest.raises(MixError, match="2 weights"):
        mix_loras([a], [1, 1], "cat")


def test_resize_reports_error_and_is_exact_at_full_rank():
    a, _ = _file_pair(ranks=(6, 6))
    same, rep_full = resize_lora(a, rank=6)
    assert rep_full.max_error < 1e-5
    for key, mod in a.modules.items():
        torch.testing.assert_close(same.modules[key].delta(), mod.delta(), atol=1e-4, rtol=1e-4)
    small, rep = resize_lora(a, rank=2)
    assert {m.rank for m in small.modules.values()} == {2}
    for key, mod in a.modules.items():
        s = torch.linalg.svdvals(mod.delta().flatten(start_dim=1))
        expected = float((s[2:] ** 2).sum().sqrt() / (s ** 2).sum().sqrt())  # Eckart-Young
        assert abs(rep.errors[f"{key[0]}.{key[1]}"] - expected) < 1e-4
    by_fro, _ = resize_lora(a, fro=0.999999)
    assert max(m.rank for m in by_fro.modules.values()) <= 6


def test_extract_lora_from_two_models():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(32, 48), nn.Conv2d(8, 8, 3))
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned[0].weight += torch.randn(48, 3) @ torch.randn(3, 32) * 0.1  # a rank-3 change
        tuned[1].weight += torch.randn(8, 8, 3, 3) * 0.01                 # a full-rank change
    lora, report = extract_lora(base, tuned, rank=3)
    assert set(lora.modules) == {("unet", "0"), ("unet", "1")}
    assert report.errors["unet.0"] < 1e-5 and report.errors["unet.1"] > 0.1
    torch.testing.assert_close(base[0].weight + lora.modules[("unet", "0")].delta(), tuned[0].weight,
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(MixError, match="identical"):
        extract_lora(base, copy.deepcopy(base), rank=2)


def test_peft_model_delegates_mixing_methods():
    """``PeftModel.add_weighted_adapter`` / ``set_adapters`` / ``fuse_lora`` reach lorabooth.adapters.mixing."""
    _, theirs, ours = _pair(ranks=(4, 4))
    report = ours.add_weighted_adapter(["default", "b"], [0.5, 0.5], "avg", combination_type="svd")
    assert report.combination_type == "svd" and report.errors
    theirs.add_weighted_adapter(["default", "b"], [0.5, 0.5], "avg", combination_type="svd")
    for name, (a, b) in _factors(theirs, "avg").items():
        got_a, got_b = _factors(ours, "avg")[name]
        torch.testing.assert_close(got_a, a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_b, b, atol=1e-5, rtol=1e-5)
    ids, img = torch.randint(0, 20, (2, 5)), torch.randn(1, 4, 6, 6)
    ours.set_adapters(["default", "b"], [0.3, 0.6])
    assert ours.active_adapters == ["default", "b"]
    before = _model_out(ours, ids, img)
    ours.fuse_lora(lora_scale=1.0)
    for g, w in zip(_model_out(ours, ids, img), before):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    ours.unfuse_lora()
