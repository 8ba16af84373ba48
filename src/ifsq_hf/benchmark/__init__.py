"""Controlled studies of the paper's claims (``ifsq-hf benchmark STUDY``): each study trains with the library's own
training scripts over several seeds and writes ``report.md``, ``results.json`` and PNG plots.

* :mod:`.bound` -- iFSQ vs FSQ (tanh) vs iFSQ with pre-quantization normalisation, plus alpha measured on the
  real pre-quantization activations of every trained encoder.
* :mod:`.statistics` -- mean ± std over seeds and paired differences with t-based confidence intervals.
* :mod:`.report` -- environment capture, ``results.json``/``report.md`` writing and the plots.
* :mod:`.runner` -- running an example training script in-process (under ``accelerate launch`` too).

Studies are imported lazily by the CLI; this package needs the ``train``, ``metrics`` and ``demo`` extras.
"""

STUDIES = ("bound",)

__all__ = ["STUDIES"]
