"""LlamaGen construction: the REPA projector does not shift the trunk's seeded initialisation."""

import torch

from ifsq_hf.models.llamagen import LlamaGenConfig, LlamaGenForImageGeneration


def test_repa_projector_leaves_the_trunk_initialisation_unchanged():
    """A no-REPA baseline and a REPA run with the same seed must start from the same trunk (the repa study compares
    them per seed); the projector follows the seed through its own generators."""
    base = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "vocab_size": 100,
            "num_classes": 10, "image_seq_len": 16}  # fmt: skip
    repa = {"repa_feature_dim": 32, "repa_projector_dim": 64, "repa_depth": 1}
    states, after = [], []
    for seed, extra in ((0, {}), (0, repa), (1, repa), (0, repa)):
        torch.manual_seed(seed)
        states.append(LlamaGenForImageGeneration(LlamaGenConfig(**base, **extra)).state_dict())
        after.append(torch.rand(1))
    trunk = list(states[0])
    assert all(torch.equal(states[0][k], states[1][k]) for k in trunk)
    assert torch.equal(after[0], after[1])  # the global RNG advanced by the same amount
    proj = [k for k in states[1] if "repa_projector" in k and k.endswith("weight")]
    assert len(proj) == 3
    for k in proj:
        assert torch.equal(states[1][k], states[3][k]) and not torch.equal(states[1][k], states[2][k])
        assert 0.015 < float(states[1][k].std()) < 0.025
