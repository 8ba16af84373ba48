"""LlamaGen attention backends, per-layer outputs, torch.export of the forward and a compiled decoding step."""

import pytest
import torch
from transformers import DynamicCache, StaticCache

from ifsq_hf.models.llamagen import LlamaGenForImageGeneration
from llamagen_testing import tiny_llamagen

LABELS = torch.tensor([1, 7])


def make_model(attn_implementation: str = "sdpa", **overrides) -> LlamaGenForImageGeneration:
    torch.manual_seed(0)
    return tiny_llamagen(attn_implementation, **overrides)


@pytest.fixture(scope="module")
def pair():
    sdpa = make_model("sdpa")
    eager = make_model("eager")
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    return sdpa, eager


def test_hidden_states_and_attentions(pair):
    sdpa, eager = pair
    tokens = torch.randint(0, 64, (2, 16))
    outs = [
        m(class_labels=LABELS, image_tokens=tokens, output_hidden_states=True, output_attentions=True)
        for m in (sdpa, eager)
    ]
    for out in outs:
        assert len(out.hidden_states) == 4 and all(h.shape == (2, 16, 32) for h in out.hidden_states)
        assert len(out.attentions) == 3 and all(a.shape == (2, 2, 16, 16) for a in out.attentions)
        # Causal: nothing above the diagonal; rows sum to one.
        assert float(torch.triu(out.attentions[0].detach(), diagonal=1).abs().max()) == 0.0
        torch.testing.assert_close(out.attentions[1].sum(-1), torch.ones(2, 2, 16))
        last = sdpa.model(class_labels=LABELS, image_tokens=tokens).last_hidden_state
        torch.testing.assert_close(out.hidden_states[-1], last, rtol=1e-5, atol=1e-5)
    for a, b in zip(outs[0].hidden_states + outs[0].attentions, outs[1].hidden_states + outs[1].attentions):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # Without the flags nothing extra is returned (the SDPA kernel is used).
    plain = sdpa(class_labels=LABELS, image_tokens=tokens)
    assert plain.hidden_states is None and plain.attentions is None
    torch.testing.assert_close(plain.logits, outs[0].logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factorized", [False, True])
def test_eager_equals_sdpa_forward_and_cached_generation(factorized):
    kw = {"factorized_vocab_sizes": [8, 8]} if factorized else {}
    sdpa = make_model("sdpa", **kw)
    eager = make_model("eager", **kw)
    eager.load_state_dict(sdpa.state_dict())
    tokens = torch.randint(0, 64, (2, 16))
    a = sdpa(class_labels=LABELS, image_tokens=tokens).logits
    b = eager(class_labels=LABELS, image_tokens=tokens).logits
    for x, y in zip(a if factorized else [a], b if factorized else [b]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    for impl in ("static", "dynamic"):
        kw = {"guidance_scale": 2.0, "do_sample": False, "cache_implementation": impl}
        assert torch.equal(sdpa.generate(LABELS, **kw), eager.generate(LABELS, **kw)), impl


def test_padding_attention_mask_uses_transformers_mask_utilities(pair):
    sdpa, eager = pair
    tokens = torch.randint(0, 64, (2, 7))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 3] = 0  # row 1 may not attend to position 3
    for m in (sdpa, eager):
        full = m(class_labels=LABELS, image_tokens=tokens).logits
        masked = m(class_labels=LABELS, image_tokens=tokens, attention_mask=mask).logits
        torch.testing.assert_close(masked[0], full[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(masked[1, :3], full[1, :3], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(masked[1, 4:], full[1, 4:])


def test_static_cache_decoding_equals_full_forward(pair):
    sdpa, _ = pair
    tokens = torch.randint(0, 64, (2, 16))
    full = sdpa(class_labels=LABELS, image_tokens=tokens).logits
    for cache in (StaticCache(config=sdpa.config, max_cache_len=16), DynamicCache(config=sdpa.config)):
        rows = [sdpa(class_labels=LABELS, past_key_values=cache, use_cache=True).logits[:, -1]]
        for n in range(15):
            step = sdpa(image_tokens=tokens[:, n : n + 1], past_key_values=cache, use_cache=True, logits_to_keep=1)
            rows.append(step.logits[:, -1])
        torch.testing.assert_close(torch.stack(rows, 1), full, rtol=1e-4, atol=1e-4)


def test_torch_export_of_forward_with_static_shapes(pair):
    sdpa, _ = pair
    tokens = torch.randint(0, 64, (2, 16))
    exported = torch.export.export(sdpa, args=(), kwargs={"class_labels": LABELS, "image_tokens": tokens})
    other_tokens = torch.randint(0, 64, (2, 16))
    got = exported.module()(class_labels=torch.tensor([3, 4]), image_tokens=other_tokens)
    expected = sdpa(class_labels=torch.tensor([3, 4]), image_tokens=other_tokens)
    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compiled_decoding_step_fullgraph_with_static_cache(pair):
    sdpa, _ = pair
    cache = StaticCache(config=sdpa.config, max_cache_len=16)
    sdpa(class_labels=LABELS, past_key_values=cache, use_cache=True)  # prefill (not compiled, as transformers)
    step = torch.compile(sdpa, fullgraph=True, dynamic=False)
    ref_cache = StaticCache(config=sdpa.config, max_cache_len=16)
    sdpa(class_labels=LABELS, past_key_values=ref_cache, use_cache=True)
    torch._dynamo.utils.counters.clear()
    with torch.no_grad():
        for n in range(4):
            embeds = sdpa.model.embed_image_tokens(torch.full((2, 1), n))
            got = step(inputs_embeds=embeds, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
            want = sdpa(inputs_embeds=embeds, past_key_values=ref_cache, use_cache=True, logits_to_keep=1).logits
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # One graph for every step: the cache length is a tensor, so the positions do not recompile.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_inputs_embeds_equal_image_tokens(pair):
    sdpa, _ = pair
    tokens = torch.randint(0, 64, (2, 9))
    by_ids = sdpa(class_labels=LABELS, image_tokens=tokens).logits
    by_embeds = sdpa(class_labels=LABELS, inputs_embeds=sdpa.model.embed_image_tokens(tokens)).logits
    torch.testing.assert_close(by_embeds, by_ids)
    assert sdpa(class_labels=LABELS, image_tokens=tokens, logits_to_keep=1).logits.shape == (2, 1, 64)
