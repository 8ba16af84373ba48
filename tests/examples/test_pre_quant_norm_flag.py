"""``--pre_quant_norm`` of the tokenizer script: sets the model config, and refuses to contradict a config file or a
saved tokenizer silently."""

import json

import pytest

from conftest import EXAMPLES
from ifsq_hf.benchmark.runner import load_example
from ifsq_hf.models.autoencoder_ifsq import PRESETS, iFSQAutoencoder


@pytest.fixture(scope="module")
def script():
    return load_example("train_ifsq_autoencoder", EXAMPLES)


def build(script, *extra):
    return script.build_model(
        script.parse_args(["--output_dir", "unused", "--preset", "test_f4_d4", *map(str, extra)])
    )


def test_flag_sets_the_model_config(script):
    assert build(script).pre_quant_normalizer is None
    model = build(script, "--pre_quant_norm")
    assert model.config.pre_quant_norm is True and model.pre_quant_normalizer is not None
    assert build(script, "--no-pre_quant_norm").config.pre_quant_norm is False


def test_agreeing_model_config_is_accepted(script, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**PRESETS["test_f4_d4"], "pre_quant_norm": True}))
    assert build(script, "--model_config", path, "--pre_quant_norm").pre_quant_normalizer is not None
    assert build(script, "--model_config", path).pre_quant_normalizer is not None


@pytest.mark.parametrize(("saved", "flag"), [(True, "--no-pre_quant_norm"), (False, "--pre_quant_norm")])
def test_conflicting_model_config_fails_clearly(script, tmp_path, saved, flag):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**PRESETS["test_f4_d4"], "pre_quant_norm": saved}))
    with pytest.raises(ValueError, match=f"{flag} conflicts with --model_config .*pre_quant_norm={saved}"):
        build(script, "--model_config", path, flag)


def test_conflicting_pretrained_tokenizer_fails_clearly(script, tmp_path):
    iFSQAutoencoder.from_preset("test_f4_d4").save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="--pre_quant_norm conflicts with --pretrained_model_name_or_path"):
        build(script, "--pretrained_model_name_or_path", tmp_path / "tok", "--pre_quant_norm")
