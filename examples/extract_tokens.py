#!/usr/bin/env python
"""Encode an image dataset once with a frozen iFSQ tokenizer: token indices for
examples/train_llamagen_repa.py --tokens_dataset.

    python examples/extract_tokens.py --tokenizer runs/ifsq --output_dir data/tokens --resolution 256 \\
        --train_data_dir /path/to/imagenet/train --repa_encoder facebook/dinov2-base

The dataset format is shared with extract_latents.py (it stores latents and indices together), so this is the same
program under the name the LlamaGen docs use.
"""

from extract_latents import main

if __name__ == "__main__":
    main()
