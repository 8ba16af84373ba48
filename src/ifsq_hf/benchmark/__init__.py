"""Controlled studies of the paper's claims (``ifsq-hf benchmark STUDY``): each study trains with the library's own
training scripts over several seeds and writes ``report.md``, ``results.json`` and PNG plots.

* :mod:`.bound` -- iFSQ vs FSQ (tanh) vs iFSQ with pre-quantization normalisation, plus alpha measured on the
  real pre-quantization activations of every trained encoder.
* :mod:`.bits` -- reconstruction vs bits per latent dimension (2..8), at fixed channels and at fixed total bits.
* :mod:`.repa` -- LlamaGen with REPA over a grid of depths x coefficients against the no-REPA baseline.
* :mod:`.ar_vs_diffusion` -- DiT (diffusion) vs LlamaGen (autoregressive) on one tokenizer, quality vs training
  samples and FLOPs, evaluated in stages of one resumed run.
* :mod:`.generators` -- the generator studies' shared tokenizer, training, held-out reference, evaluation, FLOPs.
* :mod:`.common` -- presets/configs, the shared flags, script arguments and timing.
* :mod:`.statistics` -- mean ± std over seeds and paired differences with t-based confidence intervals.
* :mod:`.report` -- environment capture, ``results.json``/``report.md`` writing and the plots.
* :mod:`.runner` -- running an example training script in-process (under ``accelerate launch`` too).

Studies are imported lazily by the CLI; this package needs the ``train``, ``metrics`` and ``demo`` extras.
"""

# study name -> (module under ifsq_hf.benchmark, one-line help). Each module defines ``add_args(parser)`` and
# ``main(args, argv) -> dict``; the CLI imports a module only when its study runs.
STUDIES: dict[str, tuple[str, str]] = {
    "bound": ("bound", "iFSQ vs FSQ (tanh) vs iFSQ + pre-quant norm; alpha on real activations."),
    "bits": ("bits", "Reconstruction vs bits per dim (2..8): fixed channels and fixed total bits per position."),
    "repa": ("repa", "LlamaGen REPA depth x lambda grid against the no-REPA baseline (heat maps)."),
    "ar-vs-diffusion": ("ar_vs_diffusion", "DiT vs LlamaGen on one tokenizer: quality vs training compute."),
}

__all__ = ["STUDIES"]
