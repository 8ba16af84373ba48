"""What the training scripts share, one job per module (nothing is imported eagerly here, so loading one module
does not pull the others' dependencies):

* ``arguments``: the shared command-line arguments and their early checks;
* ``image_data``: the image dataset and DataLoader a run reads;
* ``accelerator``: the accelerator, its trackers and resuming;
* ``optimization``: learning rate, schedule, weight-decay groups, one accumulation step;
* ``loop``: the resumable batch stream and the after-step bookkeeping;
* ``checkpointing``: atomic checkpoints and ``latest`` resume;
* ``losses``, ``repa``, ``flow_matching``, ``ema``: the training objectives and the weight average;
* ``generators``, ``precompute``, ``sampling``: what the DiT and LlamaGen scripts share.

These need the ``train`` extra (``pip install "ifsq-hf[train]"``); models and pipelines never import them.
"""

from ..utils.import_utils import require

require("accelerate", "train")
