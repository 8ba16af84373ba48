"""Safe loading and strict key checks shared by all converters."""

import pickle

import pytest
import torch
from torch import nn

from ifsq_hf.convert.common import (
    ConversionError,
    check_state_dict,
    load_checkpoint_file,
    select_state_dict,
    strip_prefixes,
)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickles_load_with_weights_only(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"ema_state_dict": {"module.w": torch.ones(2)}, "epoch": 3}, good)
    assert load_checkpoint_file(good)["epoch"] == 3
    bad = tmp_path / "bad.pt"
    bad.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(ValueError, match="weights_only=True"):
        load_checkpoint_file(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint_file(tmp_path / "missing.ckpt")


def test_select_and_strip():
    ckpt = {
        "state_dict": {"gen_model": {"a": torch.zeros(1)}},
        "ema_state_dict": {"module._orig_mod.a": torch.ones(1)},
    }
    ema = select_state_dict(ckpt, ["ema_state_dict", "state_dict/gen_model"], "tokenizer")
    assert list(strip_prefixes(ema, ["module.", "_orig_mod."])) == ["a"]
    assert select_state_dict(ckpt, ["state_dict/gen_model"], "tokenizer")["a"].item() == 0
    with pytest.raises(ConversionError, match="top-level keys"):
        select_state_dict({"epoch": 1, "cfg": {"x": 1}}, ["model"], "LlamaGen")


def test_check_state_dict_lists_every_problem():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    check_state_dict(sd, model, "ok")
    sd["extra.weight"] = torch.zeros(1)
    del sd["1.bias"]
    sd["0.weight"] = torch.zeros(4, 2)
    with pytest.raises(ConversionError) as err:
        check_state_dict(sd, model, "ckpt")
    msg = str(err.value)
    assert "unexpected keys: ['extra.weight']" in msg and "missing keys: ['1.bias']" in msg
    assert "0.weight: checkpoint (4, 2) vs model (3, 2)" in msg
