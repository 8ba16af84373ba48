"""LlamaGen `generate()` as a transformers user calls it: GenerationConfig fields, outputs, streamer, caches, errors."""

import math

import pytest
import torch
from transformers import GenerationConfig, StoppingCriteria
from transformers.generation import GenerateDecoderOnlyOutput
from transformers.generation.streamers import BaseStreamer

from ifsq_hf.models.llamagen import LlamaGenConfig, LlamaGenForImageGeneration
from llamagen_testing import tiny_llamagen as make_model

LABELS = torch.tensor([1, 7])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_model()


@pytest.fixture(scope="module")
def fmodel():
    torch.manual_seed(1)
    return make_model(factorized_vocab_sizes=[8, 8])


def test_defaults_are_llamagen_not_text_defaults(model):
    gen = model.generation_config
    assert gen.do_sample is True and gen.cache_implementation == "static"
    # The filters are LlamaGen's (none), not transformers' top_k=50: top_k=0 gives the same tokens.
    assert torch.equal(model.generate(LABELS, seed=0), model.generate(LABELS, seed=0, top_k=0, top_p=1.0))
    assert torch.equal(model.generate(LABELS, seed=0), model.generate(LABELS, seed=0, top_k=None, temperature=None))
    tokens = model.generate(LABELS, seed=0)  # positional class labels, like input_ids
    assert tokens.shape == (2, 16) and tokens.dtype == torch.long  # max_new_tokens defaults to the image's N
    # A checkpoint saved before these defaults existed (empty generation_config) still samples the upstream way,
    # not with transformers' text defaults (greedy, top_k=50).
    old = make_model()
    old.load_state_dict(model.state_dict())
    old.generation_config = GenerationConfig()
    assert torch.equal(old.generate(LABELS, seed=0), tokens)


def test_generation_config_and_kwargs_give_the_same_tokens(model):
    kwargs = {"do_sample": True, "temperature": 0.8, "top_k": 20, "top_p": 0.9}
    a = model.generate(LABELS, guidance_scale=2.0, seed=4, **kwargs)
    b = model.generate(LABELS, generation_config=GenerationConfig(guidance_scale=2.0, **kwargs), seed=4)
    assert torch.equal(a, b)
    greedy = model.generate(LABELS, do_sample=False)
    assert torch.equal(model.generate(LABELS, generation_config=GenerationConfig(do_sample=False)), greedy)
    assert torch.equal(model.generate(LABELS, temperature=0.0), greedy)  # temperature 0 = greedy
    # Seeded sampling is deterministic and differs from greedy decoding.
    assert torch.equal(model.generate(LABELS, seed=4), model.generate(LABELS, seed=4))
    assert not torch.equal(model.generate(LABELS, seed=4), greedy)
    # Global RNG when no generator/seed is given, as transformers.
    torch.manual_seed(11)
    c = model.generate(LABELS)
    torch.manual_seed(11)
    assert torch.equal(model.generate(LABELS), c)


def test_saved_generation_config_round_trip(tmp_path):
    torch.manual_seed(2)
    model = make_model()
    model.generation_config.guidance_scale = 3.0
    model.generation_config.do_sample = False
    model.save_pretrained(tmp_path)
    reloaded = LlamaGenForImageGeneration.from_pretrained(tmp_path).eval()
    assert reloaded.generation_config.guidance_scale == 3.0
    expected = model.generate(LABELS, guidance_scale=3.0, do_sample=False)
    assert torch.equal(reloaded.generate(LABELS), expected)
    assert not torch.equal(reloaded.generate(LABELS, guidance_scale=1.0), expected)


def test_max_new_tokens_and_num_return_sequences(model):
    full = model.generate(LABELS, do_sample=False)
    part = model.generate(LABELS, do_sample=False, max_new_tokens=5)
    assert part.shape == (2, 5) and torch.equal(part, full[:, :5])
    many = model.generate(LABELS, seed=0, num_return_sequences=3)
    assert many.shape == (6, 16)
    argmax_many = model.generate(LABELS, seed=0, top_k=1, num_return_sequences=2)  # top-1 sampling = greedy
    assert torch.equal(argmax_many, full.repeat_interleave(2, dim=0))


def test_return_dict_scores_logits_hidden_states_attentions(model):
    n = 4
    out = model.generate(
        LABELS,
        guidance_scale=2.0,
        seed=0,
        top_k=5,
        max_new_tokens=n,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
        output_hidden_states=True,
        output_attentions=True,
    )
    assert isinstance(out, GenerateDecoderOnlyOutput)
    assert out.sequences.shape == (2, n)
    assert torch.equal(out.sequences, model.generate(LABELS, guidance_scale=2.0, seed=0, top_k=5, max_new_tokens=n))
    assert len(out.scores) == len(out.logits) == n
    assert all(s.shape == (2, 64) for s in out.scores + out.logits)
    # logits: guided, before the processors; scores: after top-k (59 of 64 entries filtered out).
    assert all(torch.isfinite(lg).all() for lg in out.logits)
    assert all(int(torch.isfinite(s).sum(-1).max()) == 5 for s in out.scores)
    assert all(torch.isin(tok, s.topk(5).indices) for tok, s in zip(out.sequences[0], (s[0] for s in out.scores)))
    # Per step: embeddings + one state per block, for the 2B CFG rows; attention over the preallocated cache.
    assert len(out.hidden_states) == n and len(out.hidden_states[0]) == model.config.num_hidden_layers + 1
    assert out.hidden_states[0][0].shape == (4, 1, 32)
    assert len(out.attentions[2]) == model.config.num_hidden_layers
    # Step 2: query position 2 over the static cache's slots (at least the 4 needed here; a larger cache that an
    # earlier call on this model preallocated is reused, so the exact count depends on what ran before).
    weights = out.attentions[2][0]
    assert weights.shape[:3] == (4, 2, 1) and weights.shape[-1] >= n
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 2, 1))
    assert float(weights[..., 3:].abs().max()) == 0.0  # future slots are masked
    assert out.past_key_values is not None


def test_factorized_scores_per_sub_token(fmodel):
    out = fmodel.generate(
        LABELS, guidance_scale=2.0, do_sample=False, max_new_tokens=3, return_dict_in_generate=True, output_scores=True
    )
    assert out.sequences.shape == (2, 3) and len(out.scores) == 3 * 2 and out.scores[0].shape == (2, 8)
    sub = fmodel.generate(LABELS, guidance_scale=2.0, do_sample=False, max_new_tokens=3, return_sub_tokens=True)
    assert torch.equal(torch.stack([s.argmax(-1) for s in out.scores], -1).reshape(2, 3, 2), sub)


class Collect(BaseStreamer):
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value)

    def end(self):
        self.ended = True


@pytest.mark.parametrize("factorized", [False, True])
def test_streamer_receives_each_position(model, fmodel, factorized):
    m = fmodel if factorized else model
    streamer = Collect()
    tokens = m.generate(LABELS, seed=1, streamer=streamer)
    assert streamer.ended and len(streamer.chunks) == 16
    assert all(c.device.type == "cpu" and c.shape == (2,) for c in streamer.chunks)
    assert torch.equal(torch.stack(streamer.chunks, 1), tokens)


def test_stopping_criteria_end_generation_early(model):
    class AfterThree(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= 3)

    tokens = model.generate(LABELS, do_sample=False, stopping_criteria=[AfterThree()])
    assert torch.equal(tokens, model.generate(LABELS, do_sample=False)[:, :3])


def test_logits_processor_runs_before_the_warpers(model):
    from transformers import LogitsProcessor

    banned = model.generate(LABELS, do_sample=False)[0, 0]

    class Ban(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores.index_fill(-1, banned[None], float("-inf"))

    for kw in ({"do_sample": False}, {"seed": 0, "top_k": 3}):
        assert int(banned) not in model.generate(LABELS, logits_processor=[Ban()], **kw).flatten().tolist()


@pytest.mark.parametrize("guided", [False, True])
def test_static_and_dynamic_caches_and_no_cache_agree_when_sampling(model, guided):
    kw = {"guidance_scale": 2.5 if guided else 1.0, "seed": 7, "top_p": 0.95}
    static = model.generate(LABELS, cache_implementation="static", **kw)
    assert torch.equal(model.generate(LABELS, cache_implementation="dynamic", **kw), static)
    assert torch.equal(model.generate(LABELS, use_cache=False, **kw), static)
    assert torch.equal(model.generate(LABELS, batched_cfg=False, **kw), static)


def test_user_cache_is_used_and_returned(model):
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = model.generate(LABELS, do_sample=False, past_key_values=cache, return_dict_in_generate=True)
    assert out.past_key_values is cache and cache.get_seq_length() == 16
    assert torch.equal(out.sequences, model.generate(LABELS, do_sample=False))


def test_batched_equals_one_by_one(model):
    both = model.generate(LABELS, guidance_scale=2.0, do_sample=False)
    for i in range(2):
        assert torch.equal(model.generate(LABELS[i : i + 1], guidance_scale=2.0, do_sample=False), both[i : i + 1])
    tokens = torch.randint(0, 64, (2, 16))
    batched = model(class_labels=LABELS, image_tokens=tokens).logits
    single = torch.cat(
        [model(class_labels=LABELS[i : i + 1], image_tokens=tokens[i : i + 1]).logits for i in range(2)]
    )
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_bfloat16_save_load_round_trip(model, tmp_path):
    half = make_model()
    half.load_state_dict(model.state_dict())
    half.to(torch.bfloat16).save_pretrained(tmp_path)
    reloaded = LlamaGenForImageGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert reloaded.dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(half.state_dict().values(), reloaded.state_dict().values()))
    assert torch.equal(reloaded.generate(LABELS, seed=0), half.generate(LABELS, seed=0))
    tokens = torch.randint(0, 64, (2, 16))
    low = reloaded(class_labels=LABELS, image_tokens=tokens).logits
    assert low.dtype == torch.float32  # the head output is upcast, as upstream
    torch.testing.assert_close(low, model(class_labels=LABELS, image_tokens=tokens).logits, rtol=0.1, atol=0.15)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_beams": 2}, ValueError, "greedy decoding .* or sampling"),
        ({"do_sample": False, "penalty_alpha": 0.6, "top_k": 4}, ValueError, "contrastive"),
        ({"prompt_lookup_num_tokens": 3, "do_sample": False}, ValueError, "assisted"),
        ({"assistant_model": object()}, ValueError, "for text models"),
        ({"top_p": 1.5}, ValueError, r"top_p must be in \(0, 1\]"),
        ({"top_p": 0.0}, ValueError, "top_p must be"),
        ({"top_k": -1}, ValueError, "top_k must be an integer >= 0"),
        ({"top_k": 2.5}, ValueError, "top_k must be an integer"),
        ({"temperature": -0.5}, ValueError, "temperature must be"),
        ({"temperature": math.nan}, ValueError, "temperature must be"),
        ({"guidance_scale": math.nan}, ValueError, "guidance_scale must be a finite"),
        ({"guidance_scale": math.inf}, ValueError, "guidance_scale must be a finite"),
        ({"guidance_scale": [2.0, 2.0]}, ValueError, "one scale per sub-token"),
        ({"guidance_interval": (0.5,)}, ValueError, "guidance_interval must be a"),
        ({"guidance_interval": (0.6, 0.2)}, ValueError, "0 <= start < end <= 1"),
        ({"num_return_sequences": 0}, ValueError, "num_return_sequences must be"),
        ({"max_new_tokens": 0}, ValueError, "max_new_tokens"),
        ({"max_new_tokens": 17}, ValueError, r"max_new_tokens must be an integer in \[1, 16\]"),
        ({"cache_implementation": "paged"}, ValueError, "cache_implementation must be"),
        ({"num_steps": 3}, TypeError, "unexpected generate"),
    ],
)
def test_bad_generation_settings_raise(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        model.generate(LABELS, **kwargs)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ([1.5, 2.0], "integer class ids"),
        ([1.0], "integer class ids"),
        ([True, False], "integer class ids"),
        (torch.tensor([[1, 2]]), r"\(B,\) or \(B, 1\)"),
        ([], "empty"),
        ([11], r"must lie in \[0, 10\]"),
        (None, "needs class_labels"),
    ],
)
def test_bad_class_labels_raise(model, labels, match):
    with pytest.raises(ValueError, match=match):
        model.generate(labels)


def test_forward_rejects_fractional_and_boolean_labels(model):
    tokens = torch.zeros(1, 4, dtype=torch.long)
    for labels in (torch.tensor([1.5]), torch.tensor([True])):
        with pytest.raises(ValueError, match="integer class ids"):
            model(class_labels=labels, image_tokens=tokens)
    with pytest.raises(ValueError, match="integer"):
        model(class_labels=torch.tensor([1]), image_tokens=tokens.bool())


def test_vocabulary_guard_suggests_factorization():
    # 8 bits/dim with one index group: 257**4 = 4.4e9 codes (hundreds of GB of embedding and head).
    with pytest.raises(ValueError, match=r"factorized_vocab_sizes=\[66049, 66049\].*--factorized_groups"):
        LlamaGenConfig.from_preset("tiny", vocab_size=257**4)
    with pytest.raises(ValueError, match="too large for one embedding table"):
        LlamaGenConfig.from_preset("tiny", vocab_size=257**4, factorized_vocab_sizes=[257**3, 257])
    config = LlamaGenConfig.from_preset("tiny")
    config.vocab_size = 257**4  # edited after construction: caught when the model is built
    with pytest.raises(ValueError, match="factorized_vocab_sizes"):
        LlamaGenForImageGeneration(config)
    assert (
        LlamaGenConfig.from_preset("tiny", vocab_size=257**4, factorized_vocab_sizes=[66049] * 2).num_sub_tokens == 2
    )
    assert LlamaGenConfig.from_preset("tiny", vocab_size=33**4).vocab_size == 33**4  # 5 bits/dim still fits


@pytest.mark.parametrize(
    ("flag", "match"),
    [
        (["--top_p", "1.5"], "--top_p must be in"),
        (["--temperature", "-1"], "--temperature must be"),
        (["--top_k", "-2"], "--top_k must be"),
        (["--guidance_scale", "nan"], "--guidance_scale must be a finite"),
    ],
)
def test_sample_script_rejects_bad_generation_args(flag, match, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "examples" / "sample_llamagen.py"
    spec = importlib.util.spec_from_file_location("sample_llamagen_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit):
        script.main(["--model", "unused", "--output_dir", "unused", *flag])
    assert match in capsys.readouterr().err
