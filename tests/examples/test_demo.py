"""`make demo` at a tiny setting: the tokenizer stage runs the bound study, prints mean ± std and the paired
difference, writes the study's report beside its own, and two runs give identical numbers (issue 10, item 3)."""

import json

import pytest
import torch

from conftest import EXAMPLES
from ifsq_hf.benchmark.runner import load_example

TINY = ["--stages", "tokenizer", "--tokenizer_preset", "tiny", "--num_seeds", "2", "--resolution", "32"]


@pytest.fixture(scope="module")
def demo():
    threads = torch.get_num_threads()
    yield load_example("demo", EXAMPLES)
    torch.set_num_threads(threads)  # the demo pins its thread count for the whole process


def numbers(results: dict) -> dict:
    """Everything but wall times: what must not move between two runs on one machine and thread count."""
    return {k: v for k, v in results.items() if not k.endswith("seconds")}


@pytest.mark.xdist_group("examples")
def test_tokenizer_stage_is_reproducible_and_reports_intervals(demo, tmp_path):
    first = demo.main([*TINY, "--output_dir", str(tmp_path / "a")])
    second = demo.main([*TINY, "--output_dir", str(tmp_path / "b")])
    assert numbers(first) == numbers(second)
    assert json.loads((tmp_path / "a" / "results.json").read_text())["tokenizers"] == first["tokenizers"]

    psnr = first["tokenizers"]["iFSQ (alpha 1.6)"]["psnr"]
    assert psnr["n"] == 2 and psnr["std"] is not None and len(set(psnr["values"])) == 2
    diff = next(c for c in first["comparisons"] if (c["a"], c["b"], c["metric"]) == ("ifsq", "fsq", "psnr"))
    assert diff["low"] < diff["mean"] < diff["high"]
    assert first["bicubic"]["label"].startswith("bicubic ×4") and first["bicubic"]["metrics"]["psnr"] > 0

    out = tmp_path / "a"
    report = (out / "results.md").read_text()
    assert f"{psnr['mean']:.2f} ± {psnr['std']:.2f}" in report
    assert "| ifsq − fsq | psnr |" in report and "What this does and does not show" in report
    assert "[bound/report.md](bound/report.md)" in report and (out / "bound" / "report.md").is_file()
    assert all((out / p).is_file() for p in first["study_plots"]) and (out / "reconstructions.png").is_file()
    # the seed-0 tokenizers, as the generators and the README load them
    assert (out / "tokenizer_ifsq" / "config.json").is_file() and not list((out / "tokenizer_ifsq").glob("checkp*"))
    at_generators = first["seed0_at_generator_resolution"]
    assert set(at_generators) == {"fsq", "ifsq"} and at_generators["ifsq"]["psnr_as_16px_tiles"] > 0
    assert "on the same crops cut into 16 px tiles" in report


def test_reused_folder_with_another_config_is_refused(demo, tmp_path):
    demo.main([*TINY, "--num_seeds", "1", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="trained with another configuration"):
        demo.main([*TINY, "--num_seeds", "1", "--tokenizer_steps", "3", "--output_dir", str(tmp_path)])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arms", "ifsq"], "--arms must include fsq and ifsq"),
        (["--num_seeds", "0"], "--num_seeds must be >= 1"),
        (["--tokenizer_steps", "0"], "--tokenizer_steps must be >= 1"),
        (["--num_threads", "0"], "--num_threads must be >= 1"),
    ],
)
def test_bad_flags_fail_clearly(demo, argv, message, capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(argv)
    assert message in capsys.readouterr().err


def test_unknown_stage_fails_clearly(demo, tmp_path):
    with pytest.raises(SystemExit, match="unknown or empty --stages"):
        demo.main(["--stages", "tokenizers", "--output_dir", str(tmp_path)])
