"""`ifsq-hf` subcommands as a user types them (in-process through `main`, which is what the console script calls)."""

import json

import pytest

from ifsq_hf.cli import build_parser, main
from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder


def test_evaluate_writes_metrics_and_grid(tmp_path, capsys):
    iFSQAutoencoder.from_preset("test_f4_d4").save_pretrained(tmp_path / "tok")
    code = main(["evaluate", str(tmp_path / "tok"), "--resolution", "32", "--max_images", "4", "--lpips_net",
                 "none", "--output_dir", str(tmp_path / "eval")])  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and "lpips" not in metrics and metrics["bits_per_pixel"] > 0
    assert (tmp_path / "eval" / "reconstructions.png").is_file()
    assert '"psnr"' in capsys.readouterr().out


def test_errors_are_reported_with_exit_code_2(tmp_path, capsys):
    iFSQAutoencoder.from_preset("test_f4_d4").save_pretrained(tmp_path / "tok")
    assert main(["evaluate", str(tmp_path / "tok"), "--resolution", "30"]) == 2
    assert "not a multiple of the tokenizer's downsampling factor 4" in capsys.readouterr().err
    assert main(["push", str(tmp_path / "nothing"), "--repo_id", "me/x"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_card_only_writes_the_card(tmp_path):
    iFSQAutoencoder.from_preset("test_f4_d4").save_pretrained(tmp_path / "tok")
    assert main(["push", str(tmp_path / "tok"), "--repo_id", "me/tok", "--card_only"]) == 0
    assert 'from_pretrained("me/tok")' in (tmp_path / "tok" / "README.md").read_text()


def test_parser_lists_the_three_commands():
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    assert {"push", "convert", "evaluate"} <= set(build_parser()._subparsers._group_actions[0].choices)
