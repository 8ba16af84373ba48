"""``ifsq-hf`` console entry: ``push`` a saved folder with its card, ``convert`` official checkpoints, ``evaluate`` a
tokenizer, ``fid`` of a saved generator (``accelerate launch -m ifsq_hf.cli fid ...`` on N processes). Each subcommand
is a thin shell over a library function, so everything here is also scriptable.
"""

from __future__ import annotations

import argparse
import json
import sys


def _push(args: argparse.Namespace) -> int:
    from .hub import push_folder_to_hub, save_model_card

    card_kwargs = {"base_model": args.base_model, "dataset": args.dataset, "license": args.license}
    if args.card_only:
        path = save_model_card(args.folder, repo_id=args.repo_id, **card_kwargs)
        print(f"wrote {path}")
        return 0
    url = push_folder_to_hub(
        args.folder,
        args.repo_id,
        token=args.token,
        private=args.private,
        commit_message=args.commit_message,
        card_kwargs=card_kwargs,
    )
    print(url)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint

    out = convert_checkpoint(
        args.kind,
        args.checkpoint,
        args.output_dir,
        config=args.config,
        keep_projector=not args.drop_projector,
        source=args.source,
        preset=args.preset,
    )
    print(f"saved {args.kind} to {out}")
    return 0


def _check_tokenizer_source(model: str, subfolder: str | None) -> None:
    """A local tokenizer folder must exist and hold a tokenizer (not a pipeline or LlamaGen folder); Hub ids pass."""
    from pathlib import Path

    from .hub import detect_model_kind

    path = Path(model).expanduser()
    if not path.exists():
        if model.startswith(("/", ".", "~")) or model.count("/") != 1:
            raise ValueError(f"model {model!r} is neither an existing folder nor a Hub repo id ('user/name').")
        return
    folder = path / subfolder if subfolder else path
    if not folder.is_dir():
        raise ValueError(f"{path} has no subfolder {subfolder!r}; check --subfolder.")
    kind = detect_model_kind(folder)
    if kind != "tokenizer":
        hint = (
            " Its tokenizer is in the 'tokenizer' subfolder: add --subfolder tokenizer."
            if (folder / "tokenizer" / "config.json").is_file()
            else " Its tokenizer is in the 'vae' subfolder: add --subfolder vae."
            if (folder / "vae" / "config.json").is_file()
            else ""
        )
        raise ValueError(f"{folder} holds a {kind} model, not an iFSQ tokenizer.{hint}")


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_tokenizer_cli

    for name in ("batch_size", "resolution", "max_images"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")
    _check_tokenizer_source(args.model, args.subfolder)
    metrics = evaluate_tokenizer_cli(args)
    print(json.dumps(metrics, indent=2))
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    import importlib

    from .benchmark import STUDIES

    study = importlib.import_module(f".benchmark.{STUDIES[args.study][0]}", __package__)
    results = study.main(args, argv=args.invocation)
    if args.dump_config:
        print(f"wrote {args.dump_config}")
    elif results:
        print(f"wrote {args.output_dir or f'benchmark-{args.study}-' + results['preset']}/report.md")
    return 0


def _add_benchmark(sub) -> None:
    """``ifsq-hf benchmark STUDY``: controlled studies (docs/benchmark.md)."""
    import importlib

    from .benchmark import STUDIES

    p = sub.add_parser("benchmark", help="Controlled studies over seeds with report.md, results.json and plots.")
    studies = p.add_subparsers(dest="study", required=True)
    for name, (module, help_text) in STUDIES.items():
        study = studies.add_parser(name, help=help_text)
        importlib.import_module(f".benchmark.{module}", __package__).add_args(study)
        study.set_defaults(func=_benchmark)


def _fid(args: argparse.Namespace) -> int:
    from .generator_fid import run_fid

    report = run_fid(args)
    if report is not None:  # main process
        print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ifsq-hf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("push", help="Upload a saved tokenizer / DiT pipeline / LlamaGen folder with a model card.")
    p.add_argument("folder", help="Folder written by save_pretrained or a training script.")
    p.add_argument("--repo_id", required=True, help="Target repo, e.g. user/ifsq-f16-4bit.")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN / `hf auth login`).")
    p.add_argument("--private", action="store_true")
    p.add_argument("--commit_message", default=None)
    p.add_argument("--base_model", default=None, help="Card metadata: the model this one builds on.")
    p.add_argument("--dataset", default=None, help="Card metadata: the training dataset (Hub id).")
    p.add_argument("--license", default="apache-2.0")
    p.add_argument("--card_only", action="store_true", help="Write README.md into the folder, upload nothing.")
    p.set_defaults(func=_push)

    p = sub.add_parser("convert", help="Convert an official iFSQ / LlamaGen checkpoint into an ifsq-hf folder.")
    p.add_argument("kind", choices=["tokenizer", "dit", "llamagen"])
    p.add_argument("checkpoint", help="Official .ckpt/.pt/.pth or .safetensors file.")
    p.add_argument("output_dir")
    p.add_argument("--config", default=None, help="Official config (tokenizer config.json / DiT run.yaml / JSON).")
    p.add_argument("--preset", default=None, help="Architecture preset when no config is given (e.g. L, XL).")
    p.add_argument(
        "--source",
        default="official",
        choices=["official", "upstream"],
        help="LlamaGen only: iFSQ's llamagen.py ('official') or FoundationVision's gpt.py ('upstream').",
    )
    p.add_argument("--drop_projector", action="store_true", help="DiT/LlamaGen: drop the REPA projector weights.")
    p.set_defaults(func=_convert)

    p = sub.add_parser("evaluate", help="Reconstruction metrics (PSNR, SSIM, LPIPS, rFID, usage) of a tokenizer.")
    from .evaluation import add_evaluation_args

    add_evaluation_args(p)
    p.set_defaults(func=_evaluate)
    _add_benchmark(sub)

    p = sub.add_parser(
        "fid", help="FID (+ precision/recall) of a saved DiT pipeline or LlamaGen folder; runs under accelerate."
    )
    from .generator_fid import add_fid_args

    add_fid_args(p)
    p.set_defaults(func=_fid)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.invocation = ["ifsq-hf", *(sys.argv[1:] if argv is None else argv)]
    try:
        return args.func(args)
    except (ValueError, OSError) as err:  # bad input or a missing / unreadable file: a message, not a traceback
        print(f"ifsq-hf {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
