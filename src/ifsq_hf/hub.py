"""Model cards and Hub upload for the three kinds of ifsq-hf folders.

A saved folder says what it is: ``model_index.json`` (an ``iFSQDiTPipeline``), a ``config.json`` with
``"_class_name": "iFSQAutoencoder"`` (a tokenizer) or ``"model_type": "llamagen"`` (a LlamaGen model). The card is
filled from that config plus two optional files the training scripts write beside the weights:
``training_config.json`` (the run's arguments) and ``eval_results.json`` (flat ``{metric: value}``). So
``ifsq-hf push <folder> --repo_id <id>`` gives a complete card for any folder a training script produced.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .training.data_sources import used_data_args
from .training.run_config import is_secret_key, neutral_event_file_names, sanitize_run_config
from .utils.serialization import save_json

TEMPLATES = Path(__file__).parent / "model_cards"
KINDS = ("tokenizer", "dit_pipeline", "llamagen")
LIBRARY_NAME = "ifsq-hf"
PAPER_URL = "https://arxiv.org/abs/2601.17124"
TRAINING_CONFIG_NAME = "training_config.json"
EVAL_RESULTS_NAME = "eval_results.json"

CITATION = """@article{lin2026ifsq,
  title   = {iFSQ: Improving FSQ for Image Generation with 1 Line of Code},
  author  = {Lin, Bin and Li, Zongjian and Niu, Yuwei and Gong, Kaixiong and Ge, Yunyang and Lin, Yunlong and
             Zheng, Mingzhe and Zhang, JianWei and Yang, Miles and Zhong, Zhao and Bo, Liefeng and Yuan, Li},
  journal = {arXiv preprint arXiv:2601.17124},
  year    = {2026}
}"""

# Which way is better, by what a metric's name contains; the card's table marks it (counts get no arrow).
_HIGHER_IS_BETTER = ("psnr", "ssim", "usage", "utilization", "perplexity", "entropy", "inception_score")
_LOWER_IS_BETTER = ("lpips", "fid", "loss", "mse")
_METRIC_TASK = {
    "tokenizer": ("image-to-image", "Image reconstruction"),
    "dit_pipeline": ("unconditional-image-generation", "Class-conditional image generation"),
    "llamagen": ("unconditional-image-generation", "Class-conditional image generation"),
}
# The Hub has no class-conditional tag; these are the closest pipeline tags it knows.
_PIPELINE_TAG = {
    "tokenizer": "image-feature-extraction",
    "dit_pipeline": "unconditional-image-generation",
    "llamagen": "unconditional-image-generation",
}
_TAGS = {
    "tokenizer": ["ifsq", "fsq", "image-tokenizer", "autoencoder", "diffusers"],
    "dit_pipeline": ["ifsq", "dit", "flow-matching", "class-conditional", "diffusers"],
    "llamagen": ["ifsq", "llamagen", "autoregressive", "class-conditional", "transformers"],
}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-save the folder with save_pretrained.") from err


def detect_model_kind(folder: str | os.PathLike) -> str:
    """Which ifsq-hf artefact a saved folder holds: ``"tokenizer"``, ``"dit_pipeline"`` or ``"llamagen"``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; pass the directory written by save_pretrained.")
    if (folder / "model_index.json").is_file():
        return "dit_pipeline"
    config_path = folder / "config.json"
    if config_path.is_file():
        config = _read_json(config_path)
        if config.get("_class_name") == "iFSQAutoencoder":
            return "tokenizer"
        if config.get("model_type") == "llamagen":
            return "llamagen"
    raise ValueError(
        f"{folder} holds no ifsq-hf model: expected model_index.json (iFSQDiTPipeline) or a config.json of an "
        "iFSQAutoencoder or a LlamaGen model. Save the model with save_pretrained first."
    )


def _format_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _count_safetensors_parameters(folder: Path) -> int | None:
    """Parameter count read from safetensors headers (no weights are loaded)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                total += math.prod(f.get_slice(key).get_shape())
    return total


def _results_markdown(metrics: dict[str, float], dataset: str | None) -> str:
    if not metrics:
        return "No evaluation was recorded for this checkpoint."
    rows = [
        f"Measured on {dataset or 'the held-out data of the training run'}.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for name, value in metrics.items():
        key = name.lower()
        arrow = (
            " (↑)"
            if any(m in key for m in _HIGHER_IS_BETTER)
            else " (↓)"
            if any(m in key for m in _LOWER_IS_BETTER)
            else ""
        )
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        rows.append(f"| {name}{arrow} | {shown} |")
    return "\n".join(rows)


def _training_markdown(training: dict[str, Any]) -> str:
    if not training:
        return "No training configuration was recorded (for example, a converted checkpoint)."
    keep = {k: v for k, v in training.items() if v is not None and not is_secret_key(k)}
    rows = ["| argument | value |", "|---|---|"]
    rows += [f"| `{k}` | `{_table_cell(v)}` |" for k, v in sorted(keep.items())]
    return "\n".join(rows)


def _table_cell(value: Any) -> str:
    """A value shown inside a Markdown table cell's code span: no pipe, backtick or newline can break the table."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("`", "'").replace("|", "\\|").replace("\n", " ")


# Counts and properties of the format, not measurements of quality: shown in the card's text, kept out of the
# Hub's model-index results.
_NOT_RESULTS = {"num_images", "code_num_tokens", "bits_per_pixel", "compression_ratio"}


def _numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _NOT_RESULTS
    }


def _tokenizer_fields(folder: Path, config: dict, source: str) -> dict:
    levels = list(config.get("levels", []))
    down = _autoencoder_downsample(config)
    codebook = math.prod(levels) if levels else 0
    bits = sum(math.log2(level) for level in levels)
    res = int(config.get("sample_size") or 256)
    return {
        "bound": config.get("quantizer_bound", "ifsq"),
        "alpha": config.get("quantizer_alpha", 1.6),
        "levels": levels,
        "bits_per_dim": f"{bits / max(len(levels), 1):.2f}",
        "codebook_size": f"{codebook:,}",
        "downsample_factor": down,
        "example_resolution": res,
        "example_tokens": res // down,
        "bits_per_pixel": f"{bits / down**2:.4f}",
        "usage": (
            "import torch\n"
            "from ifsq_hf import iFSQAutoencoder\n\n"
            f"tokenizer = iFSQAutoencoder.from_pretrained({json.dumps(source)})\n"
            f"images = torch.rand(1, 3, {res}, {res}) * 2 - 1  # RGB in [-1, 1]\n"
            "with torch.no_grad():\n"
            "    encoded = tokenizer.encode(images)\n"
            "    latents, indices = encoded.latent, encoded.indices  # continuous (diffusion) / int64 (AR)\n"
            "    reconstruction = tokenizer.decode(latents).sample\n"
            "    from_tokens = tokenizer.decode_indices(indices).sample\n"
            "print(latents.shape, indices.shape, indices.dtype, reconstruction.shape)"
        ),
    }


def _autoencoder_downsample(config: dict) -> int:
    """Spatial downsampling of a tokenizer config: one halving per encoder stage after the first."""
    return 2 ** (len(config.get("block_out_channels") or [1]) - 1)


def _dit_fields(folder: Path, source: str) -> dict:
    index = _read_json(folder / "model_index.json")
    transformer = _read_json(folder / "transformer" / "config.json")
    id2label = index.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)] if isinstance(id2label, dict) else []
    first = json.dumps(str(names[0])) if names else "0"
    size = transformer.get("sample_size")
    channels = transformer.get("in_channels")
    return {
        "num_parameters": _format_count(_count_safetensors_parameters(folder / "transformer") or 0),
        "depth": transformer.get("num_layers"),
        "width": transformer.get("hidden_size"),
        "patch_size": transformer.get("patch_size"),
        "latent_shape": f"{channels} × {size} × {size}",
        "num_classes": transformer.get("num_classes"),
        "class_names": ", ".join(map(str, names[:20])) + (" …" if len(names) > 20 else ""),
        "repa": transformer.get("repa_depth") is not None and transformer.get("repa_feature_dim") is not None,
        "usage": (
            "import torch\n"
            "from diffusers import DiffusionPipeline\n\n"
            "# trust_remote_code: this repo's pipeline_ifsq_dit.py imports the pipeline from the installed ifsq-hf\n"
            f"pipe = DiffusionPipeline.from_pretrained({json.dumps(source)}, trust_remote_code=True)\n"
            "generator = torch.Generator().manual_seed(0)\n"
            f"images = pipe(class_labels=[{first}, 0], num_inference_steps=4, guidance_scale=2.0, "
            "generator=generator).images\n"
            'images[0].save("sample.png")'
        ),
    }


def _llamagen_fields(folder: Path, config: dict, source: str) -> dict:
    id2label = config.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    if all(str(n).startswith("LABEL_") for n in names):  # transformers' placeholder labels
        names = []
    side = config.get("image_token_size")
    has_tokenizer = (folder / "tokenizer" / "config.json").is_file()
    tokenizer_line = (
        f'tokenizer = iFSQAutoencoder.from_pretrained({json.dumps(source)}, subfolder="tokenizer")\n'
        if has_tokenizer
        else 'tokenizer = iFSQAutoencoder.from_pretrained("<the iFSQ tokenizer this model was trained on>")\n'
    )
    return {
        "num_parameters": _format_count(_count_safetensors_parameters(folder) or 0),
        "depth": config.get("num_hidden_layers"),
        "width": config.get("hidden_size"),
        "num_tokens": f"{side}×{side}",
        "vocab": f"{config.get('vocab_size'):,}"
        + (f" (factorized {config['factorized_vocab_sizes']})" if config.get("factorized_vocab_sizes") else ""),
        "num_classes": config.get("num_classes"),
        "class_names": ", ".join(map(str, names[:20])) + (" …" if len(names) > 20 else ""),
        "repa": config.get("repa_depth") is not None and bool(config.get("repa_feature_dim")),
        "usage": (
            "import torch\n"
            "from transformers import AutoModelForCausalLM\n\n"
            "from ifsq_hf import iFSQAutoencoder\n\n"
            "# the model code ships with the repo (trust_remote_code); with ifsq_hf imported it is not needed\n"
            f"model = AutoModelForCausalLM.from_pretrained({json.dumps(source)}, trust_remote_code=True)\n"
            + tokenizer_line
            + "images = model.generate_images(class_labels=[0, 0], tokenizer=tokenizer, guidance_scale=2.0, "
            "generator=torch.Generator().manual_seed(0))\n"
            'images[0].save("sample.png")'
        ),
    }


def create_model_card(
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    metrics: dict[str, float] | None = None,
    training_config: dict[str, Any] | None = None,
    dataset: str | None = None,
    base_model: str | None = None,
    tags: list[str] | None = None,
    license: str = "apache-2.0",
    limitations: str = "",
) -> ModelCard:
    """Build the card for a saved folder (kind detected from its files).

    ``metrics`` and ``training_config`` default to the folder's ``eval_results.json`` / ``training_config.json``.
    The usage snippet loads ``repo_id`` when given (what Hub visitors run), else the folder path.
    """
    folder = Path(folder)
    kind = detect_model_kind(folder)
    if metrics is None and (folder / EVAL_RESULTS_NAME).is_file():
        metrics = _read_json(folder / EVAL_RESULTS_NAME)
    if training_config is None and (folder / TRAINING_CONFIG_NAME).is_file():
        training_config = _read_json(folder / TRAINING_CONFIG_NAME)
    # Cards are published: no credentials or local paths, whoever wrote the configuration.
    metrics, training_config = metrics or {}, sanitize_run_config(training_config or {}, folder)
    dataset = dataset or training_config.get("dataset_name")
    hub_dataset = dataset if dataset and "/" in dataset and not os.path.exists(dataset) else None
    precomputed = training_config.get("latents_dataset") or training_config.get("tokens_dataset")
    if dataset is None and precomputed:
        dataset = f"a precomputed latent/token dataset ({Path(precomputed).name})"
    elif dataset is None and training_config.get("train_data_dir"):
        dataset = f"a local image folder ({Path(training_config['train_data_dir']).name})"
    elif dataset is None and training_config:
        dataset = "the photos bundled with ifsq-hf (held-out photos for evaluation)"
    source = repo_id or str(folder.resolve())
    model_name = repo_id.split("/")[-1] if repo_id else folder.resolve().name

    if kind == "tokenizer":
        config = _read_json(folder / "config.json")
        fields = _tokenizer_fields(folder, config, source)
        fields["num_parameters"] = _format_count(_count_safetensors_parameters(folder) or 0)
    elif kind == "dit_pipeline":
        fields = _dit_fields(folder, source)
    else:
        fields = _llamagen_fields(folder, _read_json(folder / "config.json"), source)

    task_type, task_name = _METRIC_TASK[kind]
    numeric = _numeric_metrics(metrics)
    eval_results = [
        EvalResult(
            task_type=task_type,
            task_name=task_name,
            dataset_type=hub_dataset or "custom",
            dataset_name=str(dataset or "custom"),
            metric_type=name,
            metric_name=name,
            metric_value=value,
        )
        for name, value in numeric.items()
    ] or None
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=license,
        tags=list(dict.fromkeys(_TAGS[kind] + list(tags or []))),
        pipeline_tag=_PIPELINE_TAG[kind],
        datasets=[hub_dataset] if hub_dataset else None,
        base_model=base_model,
        model_name=model_name,
        eval_results=eval_results,
        metrics=sorted(numeric) or None,
    )
    template = TEMPLATES / f"{kind}.md"
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=model_name,
        results=_results_markdown(metrics, dataset),
        training=_training_markdown(training_config),
        limitations=limitations,
        citation=CITATION,
        **fields,
    )


def save_model_card(folder: str | os.PathLike, **card_kwargs) -> Path:
    """Write ``README.md`` (the model card) into ``folder`` and return its path."""
    card = create_model_card(folder, **card_kwargs)
    path = Path(folder) / "README.md"
    card.save(str(path))
    return path


def write_run_metadata(
    folder: str | os.PathLike, training_config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None
) -> None:
    """Store a run's arguments and evaluation next to the weights, where ``create_model_card`` reads them."""
    folder = Path(folder)
    if training_config is not None:
        save_json(sanitize_run_config(training_config, folder), folder / TRAINING_CONFIG_NAME)
    if metrics is not None:
        save_json(metrics, folder / EVAL_RESULTS_NAME)


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    path_in_repo: str | None = None,
    write_card: bool = True,
    card_kwargs: dict[str, Any] | None = None,
) -> str:
    """Upload a saved ifsq-hf folder (with a freshly written card) to ``repo_id``; returns the commit URL.

    ``path_in_repo`` uploads into a subfolder (e.g. ``checkpoint-500``), in which case the root card is left alone.
    """
    folder = Path(folder)
    if write_card and path_in_repo is None:
        save_model_card(folder, repo_id=repo_id, **(card_kwargs or {}))
    else:
        detect_model_kind(folder)  # fail early on a folder that is not a model
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id  # adds the user's namespace
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        path_in_repo=path_in_repo,
        commit_message=commit_message or f"Upload {detect_model_kind(folder)} with ifsq-hf",
        # Training state stays local; weights, card, config, validation pictures and TensorBoard logs go up.
        ignore_patterns=["checkpoint-*/**", ".checkpoint-*/**", "*.tmp"],
    )
    return str(getattr(info, "commit_url", info))


def finish_run(output_dir: str | os.PathLike, args, metrics: dict[str, Any] | None) -> Path:
    """End of a training script: record the run beside the saved model, write its card, push if asked."""
    config = used_data_args(sanitize_run_config(args, output_dir))  # what was used, nothing secret or local
    write_run_metadata(output_dir, training_config=config, metrics=metrics or {})
    # TensorBoard names its files after the host; the folder may be published, the machine's name should not be.
    neutral_event_file_names(output_dir)
    repo_id = getattr(args, "hub_model_id", None) or Path(output_dir).resolve().name
    card = save_model_card(output_dir, repo_id=repo_id)
    if getattr(args, "push_to_hub", False):
        url = push_folder_to_hub(
            output_dir,
            repo_id,
            token=args.hub_token,
            private=args.hub_private_repo or None,
            commit_message="End of training",
        )
        print(f"pushed {output_dir} to {url}")
    return card
