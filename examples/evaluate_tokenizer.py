#!/usr/bin/env python
"""Evaluate a saved iFSQ tokenizer: PSNR, SSIM, LPIPS (AlexNet, as the official evaluation), optional rFID, code
usage, bits per pixel; writes ``metrics.json`` and ``reconstructions.png`` (inputs above reconstructions).

    python examples/evaluate_tokenizer.py runs/ifsq --data /path/to/val_images --resolution 256 \\
        --output_dir eval/ifsq --fid

Without ``--data`` it evaluates on the held-out bundled photos (offline). ``ifsq-hf evaluate`` is the same program.
"""

import argparse
import json

from ifsq_hf.evaluation import add_evaluation_args, evaluate_tokenizer_cli


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    metrics = evaluate_tokenizer_cli(add_evaluation_args(parser).parse_args(argv))
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
