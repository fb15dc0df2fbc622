"""lorabooth's LoRA equals peft's (0.21.2, the pinned oracle) on every architecture we support."""

from __future__ import annotations

import lorabooth.adapters as lb
import torch

from tests.adapters.lora_cases import CASES, build_pair

ATOL = 1e-5


def test_same_outputs_as_peft(pair):
    theirs, ours = pair.outputs(pair.theirs), pair.outputs(pair.ours)
    base = pair.outputs(pair.base)
    assert (theirs - base).abs().max() > 1e-3, "the adapter must actually change the output for this test to mean anything"
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_same_parameter_counts_keys_and_trainable_set(pair):
    assert pair.ours.get_nb_trainable_parameters() == pair.theirs.get_nb_trainable_parameters()
    assert sorted(pair.ours.state_dict()) == sorted(pair.theirs.state_dict())
    trainable = sorted(n for n, p in pair.theirs.named_parameters() if p.requires_grad)
    # get_peft_model leaves the new adapter trainable in both libraries
    assert sorted(n for n, p in pair.ours.named_parameters() if p.requires_grad) == trainable
    import peft

    assert sorted(lb.get_peft_model_state_dict(pair.ours)) == sorted(peft.get_peft_model_state_dict(pair.theirs))


def test_merged_equals_unmerged_and_unmerge_restores_base(pair):
    before = {k: v.clone() for k, v in pair.ours.get_base_model().state_dict().items() if "lora_" not in k}
    unmerged = pair.outputs(pair.ours)
    pair.ours.merge_adapter()
    merged = pair.outputs(pair.ours)
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
    pair.ours.unmerge_adapter()
    after = pair.ours.get_base_model().state_dict()
    worst = max((after[k] - v).abs().max().item() for k, v in before.items() if v.is_floating_point())
    assert worst < 1e-6


def test_merge_and_unload_matches_peft(pair):
    ours = pair.ours.merge_and_unload()
    theirs = pair.theirs.merge_and_unload()
    assert not any(isinstance(m, lb.LoraLayer) for m in ours.modules())
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(pair.case.output(ours(**pair.inputs)), pair.case.output(theirs(**pair.inputs)),
                                   atol=ATOL, rtol=0)


def test_disabled_adapter_gives_base_output(pair):
    with pair.ours.disable_adapter():
        torch.testing.assert_close(pair.outputs(pair.ours), pair.outputs(pair.base), atol=0, rtol=0)
    assert (pair.outputs(pair.ours) - pair.outputs(pair.base)).abs().max() > 1e-3


def test_same_seed_same_initial_weights():
    """With init_lora_weights True / 'gaussian' / False the same seed gives peft's exact numbers."""
    import peft

    case = CASES["gpt2"]
    for init in (True, "gaussian", False):
        torch.manual_seed(0)
        base = case.build()
        kwargs = dict(r=4, target_modules=["c_attn", "wte"], init_lora_weights=init)
        torch.manual_seed(5)
        theirs = peft.get_peft_model(base, peft.LoraConfig(**kwargs))
        torch.manual_seed(0)
        base = case.build()
        torch.manual_seed(5)
        ours = lb.get_peft_model(base, lb.LoraConfig(**kwargs))
        a, b = peft.get_peft_model_state_dict(theirs), lb.get_peft_model_state_dict(ours)
        assert sorted(a) == sorted(b)
        for key in a:
            assert torch.equal(a[key], b[key]), (init, key)


def test_rank_alpha_patterns_rslora_and_layer_selection_match_peft():
    import peft

    extra = dict(target_modules=["c_attn", "c_proj", "c_fc"], rank_pattern={"h.0.attn.c_attn": 2, "c_fc": 6},
                 alpha_pattern={r"h\.1\..*c_proj": 3}, use_rslora=True, layers_to_transform=[1])
    p = build_pair(CASES["gpt2"], **extra)
    torch.testing.assert_close(p.outputs(p.ours), p.outputs(p.theirs), atol=ATOL, rtol=0)
    ours_layers = {n: (m.r["default"], m.scaling["default"]) for n, m in p.ours.named_modules()
                   if isinstance(m, lb.LoraLayer)}
    theirs_layers = {n: (m.r["default"], m.scaling["default"]) for n, m in p.theirs.named_modules()
                     if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert ours_layers == theirs_layers
    assert all(".h.1." in n for n in ours_layers)
