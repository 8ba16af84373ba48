"""Bad input, table-driven: every row is something a user may really pass, and must get a clear error of the right
type whose message names the problem (and usually the fix). Rows cover the library API (data, tokenizer, checkpoints,
divergence, cards), the training scripts' arguments (``parse_args`` only: no training) and the ``ifsq-hf`` CLI.
The silently-wrong cases of issue 15 in this area are here too: float images in [0, 255], conflicting data flags, a
quantizer override loading trained weights, fractional/boolean labels; 16-bit PNGs are tested in
tests/training/test_data_sources.py."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ifsq_hf import cli
from ifsq_hf.data import (
    BundledPhotoDataset,
    ImageFolderDataset,
    ImageTransform,
    bundled_photos,
    collate_images,
    load_image_dataset,
    pil_to_tensor,
)
from ifsq_hf.hub import create_model_card, detect_model_kind
from ifsq_hf.models.autoencoder_ifsq import iFSQAutoencoder
from ifsq_hf.training.checkpointing import CheckpointError, resolve_resume_checkpoint, verify_checkpoint
from ifsq_hf.training.data_sources import check_precomputed_args
from ifsq_hf.training.divergence import TrainingDivergedError, check_finite_loss, check_finite_weights

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class CliError(Exception):
    """``ifsq-hf`` exited non-zero; the message is what it printed on stderr."""


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bad_inputs_{name[:-3]}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SCRIPTS: dict = {}


def parse(script: str, *argv):
    """The script's own ``parse_args``; argparse's ``SystemExit`` is re-raised with what it printed."""
    module = _SCRIPTS.setdefault(script, _script(script))
    required = {"train_dit.py": ["--vae_model_name_or_path", "tok"], "train_llamagen_repa.py": ["--tokenizer", "tok"]}
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return module.parse_args(["--output_dir", "out", *required.get(script, []), *map(str, argv)])
    except SystemExit as err:
        raise SystemExit(stderr.getvalue()) from err


def run_cli(*argv):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main([str(a) for a in argv])
    except SystemExit as err:
        raise SystemExit(stderr.getvalue()) from err
    if code:
        raise CliError(stderr.getvalue())
    return code


def _png(path: Path, size=(20, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 120, np.uint8)).save(path)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """Folders the rows point at: a saved 17-level tokenizer, image folders, broken model/checkpoint folders."""
    root = tmp_path_factory.mktemp("bad_inputs")
    torch.manual_seed(0)
    tokenizer = iFSQAutoencoder.from_preset("test_f4_d4").eval()
    tokenizer.save_pretrained(root / "tokenizer")
    _png(root / "images" / "cat" / "0.png")
    _png(root / "images" / "dog" / "0.png")
    (root / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("no images here")
    (root / "bad_config").mkdir()
    (root / "bad_config" / "config.json").write_text("{not json")
    (root / "foreign").mkdir()
    (root / "foreign" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (root / "pipeline" / "vae").mkdir(parents=True)
    (root / "pipeline" / "model_index.json").write_text("{}")
    tokenizer.save_pretrained(root / "pipeline" / "vae")
    import shutil

    shutil.copytree(root / "tokenizer", root / "bad_run")
    (root / "bad_run" / "training_config.json").write_text("[1, 2")
    (root / "ckpt" / "checkpoint-3").mkdir(parents=True)
    (root / "ckpt" / "checkpoint-3" / "model.safetensors").write_bytes(b"partial")
    (root / "ckpt" / "checkpoint-5").mkdir(parents=True)
    (root / "ckpt" / "checkpoint-5" / "training_state.json").write_text('{"global_step": 5}')
    (root / "ckpt" / "checkpoint-5" / "manifest.json").write_text(
        json.dumps({"files": {"model.safetensors": {"size": 10, "sha256": "0" * 64}}})
    )
    (root / "a_file.txt").write_text("x")
    return SimpleNamespace(root=root, tokenizer=tokenizer, tok=root / "tokenizer")


def _labelled(label):
    import datasets

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    table = datasets.Dataset.from_dict({"image": [{"bytes": buf.getvalue(), "path": None}], "label": [label]})
    table = table.cast_column("image", datasets.Image(decode=False))
    return ImageFolderDataset(table, ImageTransform(8), "image", "label")[0]


def _nan_linear():
    layer = torch.nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.fill_(float("nan"))
    return layer


def _precomputed(c, *argv):
    args = parse("train_dit.py", "--latents_dataset", c.root / "latents", "--repa_encoder", "none", *argv)
    check_precomputed_args(args, SimpleNamespace(metadata={"latent_shape": [4, 8, 8]}), 4)
    return args


def _encode(c, x):
    with torch.no_grad():
        return c.tokenizer.encode(x)


# (id, call(ctx), expected exception, regex the message must match)
CASES = [
    # ------------------------------------------------------------------ data API
    ("transform-resolution-0", lambda c: ImageTransform(0), ValueError, r"resolution must be a positive int"),
    ("transform-bad-crop", lambda c: ImageTransform(8, crop="top"), ValueError, r"crop must be 'center' or 'random'"),
    ("transform-image-too-small", lambda c: ImageTransform(32, resize=False)(Image.new("RGB", (10, 10))),
     ValueError, r"smaller than the crop 32x32"),
    ("array-float-image", lambda c: pil_to_tensor(np.zeros((4, 4, 3), np.float32)), ValueError,
     r"must be uint8 or uint16.*float32"),
    ("array-int64-image", lambda c: pil_to_tensor(np.zeros((4, 4), np.int64)), ValueError, r"uint8 or uint16"),
    ("image-of-wrong-type", lambda c: pil_to_tensor("photo.png"), ValueError, r"expected a PIL image.*str"),
    ("bundled-bad-split", lambda c: BundledPhotoDataset(8, split="val"), ValueError,
     r"split must be 'train', 'test' or 'all'"),
    ("bundled-bad-crops", lambda c: BundledPhotoDataset(8, crops="tiles"), ValueError, r"crops must be"),
    ("bundled-unknown-held-out", lambda c: BundledPhotoDataset(8, held_out=("lena",)), ValueError,
     r"unknown held-out photos \['lena'\]"),
    ("bundled-zero-samples", lambda c: BundledPhotoDataset(8, num_samples=0), ValueError,
     r"num_samples must be positive"),
    ("bundled-resolution-too-big", lambda c: BundledPhotoDataset(5000, split="test"), ValueError,
     r"smaller than resolution 5000"),
    ("bundled-unknown-photo", lambda c: bundled_photos(["lena"]), ValueError, r"unknown bundled photos"),
    ("folder-missing", lambda c: load_image_dataset(str(c.root / "nowhere")), ValueError, r"does not exist"),
    ("folder-without-images", lambda c: load_image_dataset(str(c.root / "notes")), ValueError,
     r"contains no image files"),
    ("folder-unknown-split", lambda c: load_image_dataset(str(c.root / "images"), split="validation"), ValueError,
     r"has no split 'validation'"),
    ("hub-dataset-offline", lambda c: load_image_dataset("nobody/no-such-dataset"), ValueError,
     r"not an existing local folder"),
    ("holdout-fraction-1.5", lambda c: load_image_dataset(str(c.root / "images"), holdout_fraction=1.5),
     ValueError, r"strictly between 0 and 1"),
    ("holdout-with-streaming", lambda c: load_image_dataset(str(c.root / "images"), holdout_fraction=0.5,
                                                           streaming=True), ValueError, r"indexable"),
    ("holdout-bad-split", lambda c: load_image_dataset(str(c.root / "images"), split="test", holdout_fraction=0.5),
     ValueError, r"split must be 'train' or 'validation'"),
    ("unknown-label-column", lambda c: load_image_dataset(str(c.root / "images"), label_column="klass"),
     ValueError, r"no column 'klass'"),
    ("fractional-label", lambda c: _labelled(0.5), ValueError, r"label 0\.5.*integer class ids"),
    ("boolean-label", lambda c: _labelled(True), ValueError, r"label True.*integer class ids"),
    ("missing-label", lambda c: _labelled(None), ValueError, r"label None.*integer class ids"),
    ("string-label", lambda c: _labelled("cat"), ValueError, r"label 'cat'.*integer class ids"),
    ("collate-empty", lambda c: collate_images([]), ValueError, r"empty batch"),
    ("collate-mixed-sizes", lambda c: collate_images([{"pixel_values": torch.zeros(3, 4, 4)},
                                                     {"pixel_values": torch.zeros(3, 5, 5)}]),
     ValueError, r"different shapes"),
    # ------------------------------------------------------------------ tokenizer API
    ("encode-float-0-255", lambda c: _encode(c, torch.rand(1, 3, 16, 16) * 255), ValueError,
     r"expects images in \[-1, 1\].*x / 127\.5 - 1"),
    ("encode-nan", lambda c: _encode(c, torch.full((1, 3, 16, 16), float("nan"))), ValueError, r"NaN/Inf"),
    ("encode-uint8", lambda c: _encode(c, torch.zeros(1, 3, 16, 16, dtype=torch.uint8)), ValueError,
     r"floating-point image.*uint8"),
    ("encode-3d", lambda c: _encode(c, torch.zeros(3, 16, 16)), ValueError, r"shape \(B, C, H, W\)"),
    ("encode-channels-last", lambda c: _encode(c, torch.zeros(1, 16, 16, 3)), ValueError,
     r"16 channels.*channel-first"),
    ("encode-size-not-multiple", lambda c: _encode(c, torch.zeros(1, 3, 18, 16)), ValueError,
     r"not divisible by the downsampling factor 4"),
    ("encode-numpy", lambda c: _encode(c, np.zeros((1, 3, 16, 16), np.float32)), ValueError,
     r"must be a torch\.Tensor"),
    ("load-9-levels-into-17-level-weights", lambda c: iFSQAutoencoder.from_pretrained(c.tok, levels=[9] * 4),
     ValueError, r"trained with another quantizer \(levels: saved \[17, 17, 17, 17\], requested \[9, 9, 9, 9\]\)"),
    ("load-with-other-bound", lambda c: iFSQAutoencoder.from_pretrained(c.tok, quantizer_bound="tanh"),
     ValueError, r"quantizer_bound: saved 'ifsq', requested 'tanh'"),
    ("load-levels-for-other-channels", lambda c: iFSQAutoencoder.from_pretrained(c.tok, levels=[17] * 6),
     ValueError, r"latent_channels \(4\) must equal len\(levels\) \(6\)"),
    ("load-shape-mismatch", lambda c: iFSQAutoencoder.from_pretrained(c.tok, levels=[17] * 6, latent_channels=6),
     ValueError, r"expected shape .* but got"),
    # ------------------------------------------------------------------ checkpoints and divergence
    ("resume-missing-checkpoint", lambda c: resolve_resume_checkpoint(c.root / "ckpt", "checkpoint-99"),
     ValueError, r"checkpoint 'checkpoint-99' not found"),
    ("resume-incomplete-checkpoint", lambda c: resolve_resume_checkpoint(c.root / "ckpt", "checkpoint-3"),
     CheckpointError, r"not a complete checkpoint \(no training_state\.json\)"),
    ("resume-checkpoint-missing-file", lambda c: verify_checkpoint(c.root / "ckpt" / "checkpoint-5"),
     CheckpointError, r"checkpoint-5: model\.safetensors is missing"),
    ("resume-latest-none-usable", lambda c: resolve_resume_checkpoint(c.root / "ckpt", "latest"),
     CheckpointError, r"no usable checkpoint.*checkpoint-5: model\.safetensors is missing"),
    ("loss-nan", lambda c: check_finite_loss(torch.tensor(float("nan")), 12), TrainingDivergedError,
     r"diverged at step 12: the loss is nan.*--learning_rate"),
    ("weights-nan", lambda c: check_finite_weights(_nan_linear(), 30), TrainingDivergedError,
     r"by step 30: the weights hold 4 non-finite values in 1 tensors \[weight"),
    # ------------------------------------------------------------------ cards
    ("card-of-a-file", lambda c: detect_model_kind(c.root / "a_file.txt"), ValueError, r"is not a folder"),
    ("card-of-empty-folder", lambda c: detect_model_kind(c.root / "empty"), ValueError, r"holds no ifsq-hf model"),
    ("card-of-foreign-model", lambda c: detect_model_kind(c.root / "foreign"), ValueError, r"holds no ifsq-hf model"),
    ("card-bad-config-json", lambda c: detect_model_kind(c.root / "bad_config"), ValueError,
     r"config\.json is not valid JSON"),
    ("card-bad-training-config", lambda c: create_model_card(c.root / "bad_run"), ValueError,
     r"training_config\.json is not valid JSON"),
    # ------------------------------------------------------------------ script arguments
    ("script-learning-rate-0", lambda c: parse("train_ifsq_autoencoder.py", "--learning_rate", 0), ValueError,
     r"--learning_rate must be > 0"),
    ("script-max-steps-0", lambda c: parse("train_dit.py", "--max_train_steps", 0), ValueError,
     r"--max_train_steps must be >= 1"),
    ("script-batch-size-0", lambda c: parse("train_llamagen_repa.py", "--train_batch_size", 0), ValueError,
     r"--train_batch_size must be >= 1"),
    ("script-accumulation-0", lambda c: parse("train_ifsq_autoencoder.py", "--gradient_accumulation_steps", 0),
     ValueError, r"--gradient_accumulation_steps must be >= 1"),
    ("script-checkpointing-steps-0", lambda c: parse("train_dit.py", "--checkpointing_steps", 0), ValueError,
     r"--checkpointing_steps must be >= 1"),
    ("script-ema-decay-1.5", lambda c: parse("train_llamagen_repa.py", "--ema_decay", 1.5), ValueError,
     r"--ema_decay must lie in \[0, 1\]"),
    ("script-resolution-0", lambda c: parse("train_ifsq_autoencoder.py", "--resolution", 0), ValueError,
     r"--resolution must be >= 1"),
    ("script-two-image-sources", lambda c: parse("train_ifsq_autoencoder.py", "--dataset_name", "user/pics",
                                                 "--train_data_dir", "/data/pics"),
     ValueError, r"--dataset_name 'user/pics' and --train_data_dir '/data/pics' both name the training images"),
    ("script-latents-and-images", lambda c: parse("train_dit.py", "--latents_dataset", "lat", "--train_data_dir",
                                                  "/data/pics"),
     ValueError, r"--latents_dataset and --train_data_dir both name the training data"),
    ("script-tokens-and-hub-dataset", lambda c: parse("train_llamagen_repa.py", "--tokens_dataset", "tok_data",
                                                      "--dataset_name", "user/pics"),
     ValueError, r"--tokens_dataset and --dataset_name both name the training data"),
    ("script-latents-resolution-conflict", lambda c: _precomputed(c, "--resolution", 64), ValueError,
     r"--resolution 64 disagrees with --latents_dataset, which was extracted at 32 px"),
    ("script-validation-split-1.5", lambda c: parse("train_ifsq_autoencoder.py", "--train_data_dir", "d",
                                                    "--validation_split", 1.5),
     ValueError, r"--validation_split must lie strictly between 0 and 1"),
    ("script-validation-split-bundled", lambda c: parse("train_ifsq_autoencoder.py", "--validation_split", 0.1),
     ValueError, r"--validation_split applies to --dataset_name/--train_data_dir"),
    ("script-validation-split-streaming", lambda c: parse("train_ifsq_autoencoder.py", "--dataset_name", "u/d",
                                                          "--streaming", "--validation_split", 0.1),
     ValueError, r"--validation_split needs an indexable dataset"),
    ("script-validation-split-precomputed", lambda c: parse("train_dit.py", "--latents_dataset", "lat",
                                                            "--validation_split", 0.1),
     ValueError, r"--validation_split does not apply to --latents_dataset"),
    ("script-bundled-samples-0", lambda c: parse("train_ifsq_autoencoder.py", "--num_bundled_samples", 0),
     ValueError, r"--num_bundled_samples must be >= 1"),
    ("script-negative-workers", lambda c: parse("train_dit.py", "--dataloader_num_workers", -1), ValueError,
     r"--dataloader_num_workers must be >= 0"),
    ("script-disc-start-negative", lambda c: parse("train_ifsq_autoencoder.py", "--disc_start", -1), SystemExit,
     r"--disc_start must be >= 0"),
    ("script-factorized-groups-0", lambda c: parse("train_llamagen_repa.py", "--factorized_groups", 0), SystemExit,
     r"--factorized_groups must be >= 1"),
    ("script-bad-preset-overrides", lambda c: parse("train_dit.py", "--preset_overrides", "{hidden_size: 8}"),
     SystemExit, r"argument --preset_overrides: invalid loads value"),
    ("script-mixed-precision-fp8", lambda c: parse("train_dit.py", "--mixed_precision", "fp8"), SystemExit,
     r"argument --mixed_precision: invalid choice: 'fp8'"),
    ("script-missing-output-dir", lambda c: _script("train_ifsq_autoencoder.py").parse_args([]), SystemExit, r"2"),
    ("script-bad-bundled-split", lambda c: parse("train_ifsq_autoencoder.py", "--bundled_split", "val"), SystemExit,
     r"argument --bundled_split: invalid choice: 'val'"),
    # ------------------------------------------------------------------ CLI
    ("cli-no-command", lambda c: run_cli(), SystemExit, r"the following arguments are required: command"),
    ("cli-push-missing-folder", lambda c: run_cli("push", c.root / "nowhere", "--repo_id", "me/x", "--card_only"),
     CliError, r"ifsq-hf push: error: .*nowhere is not a folder"),
    ("cli-push-empty-folder", lambda c: run_cli("push", c.root / "empty", "--repo_id", "me/x", "--card_only"),
     CliError, r"holds no ifsq-hf model"),
    ("cli-convert-bad-kind", lambda c: run_cli("convert", "vqgan", "a.ckpt", "out"), SystemExit,
     r"argument kind: invalid choice: 'vqgan'"),
    ("cli-convert-missing-checkpoint", lambda c: run_cli("convert", "tokenizer", c.root / "none.ckpt",
                                                         c.root / "out"),
     CliError, r"none\.ckpt does not exist"),
    ("cli-convert-not-a-checkpoint", lambda c: run_cli("convert", "llamagen", c.tok / "config.json", c.root / "o2"),
     CliError, r"could not be loaded with weights_only=True"),
    ("cli-evaluate-missing-model", lambda c: run_cli("evaluate", c.root / "nowhere"), CliError,
     r"ifsq-hf evaluate: error: .*nowhere.* is neither an existing folder nor a Hub repo id"),
    ("cli-evaluate-pipeline-folder", lambda c: run_cli("evaluate", c.root / "pipeline"), CliError,
     r"holds a dit_pipeline model, not an iFSQ tokenizer\. Its tokenizer is in the 'vae' subfolder"),
    ("cli-evaluate-bad-subfolder", lambda c: run_cli("evaluate", c.root / "pipeline", "--subfolder", "vea"),
     CliError, r"has no subfolder 'vea'"),
    ("cli-evaluate-batch-size-0", lambda c: run_cli("evaluate", c.tok, "--batch_size", 0), CliError,
     r"--batch_size must be >= 1"),
    ("cli-evaluate-resolution-not-multiple", lambda c: run_cli("evaluate", c.tok, "--resolution", 30), CliError,
     r"--resolution 30 is not a multiple of the tokenizer's downsampling factor 4"),
    ("cli-evaluate-data-missing", lambda c: run_cli("evaluate", c.tok, "--data", c.root / "nowhere",
                                                    "--resolution", 16),
     CliError, r"image folder .*nowhere.* does not exist"),
    ("cli-evaluate-data-without-test-split", lambda c: run_cli("evaluate", c.tok, "--data", c.root / "images",
                                                               "--resolution", 16),
     CliError, r"has no split 'test'"),
]  # fmt: skip


def test_the_table_is_big_and_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


@pytest.mark.parametrize(("call", "error", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(ctx, call, error, message):
    with pytest.raises(error) as info:
        call(ctx)
    assert type(info.value) is error or error is ValueError, f"{type(info.value).__name__}: {info.value}"
    text = str(info.value)
    assert re.search(message, text, flags=re.S), f"message {text!r} does not match {message!r}"
    assert "Traceback" not in text


def test_precomputed_data_sets_the_resolution_it_was_extracted_at(ctx):
    args = _precomputed(ctx)  # no --resolution given: the stored one wins and is what the card records
    assert args.resolution == 32


# --------------------------------------------------------------------------------------------- card injection

CRAFTED = '"); import os; os.system("echo pwned"); ("'


def _snippet(card_text: str) -> str:
    return re.search(r"```python\n(.*?)```", card_text, flags=re.S).group(1)


def _calls_outside_allowed(tree: ast.AST) -> list[str]:
    """Names of every function the snippet calls; the crafted label must not add ``os.system``."""
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            calls.append(ast.unparse(node.func))
    return calls


@pytest.mark.parametrize("kind", ["dit_pipeline", "llamagen"])
def test_card_snippet_quotes_crafted_labels_and_repo_ids(kind, tmp_path):
    from ifsq_hf.models.llamagen import LlamaGenConfig

    folder = tmp_path / "model"
    if kind == "dit_pipeline":
        folder.mkdir()
        (folder / "model_index.json").write_text(json.dumps({"id2label": {"0": CRAFTED, "1": "dog"}}))
        (folder / "transformer").mkdir()
        (folder / "transformer" / "config.json").write_text(json.dumps({"sample_size": 4, "in_channels": 4}))
    else:
        config = LlamaGenConfig.from_preset("tiny", vocab_size=17**4, num_classes=2, image_token_size=4,
                                            id2label={0: CRAFTED, 1: "dog"})  # fmt: skip
        config.save_pretrained(folder)
    card = str(create_model_card(folder, repo_id='me/x"); import os; ("'))
    snippet = _snippet(card)
    tree = ast.parse(snippet)  # valid Python ...
    calls = _calls_outside_allowed(tree)
    assert "os.system" not in calls and not any(isinstance(n, ast.Import) and n.names[0].name == "os"
                                                 for n in ast.walk(tree))  # fmt: skip
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert 'me/x"); import os; ("' in strings  # ... where the crafted text is one string literal
    if kind == "dit_pipeline":
        assert CRAFTED in strings
