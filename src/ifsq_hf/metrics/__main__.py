"""``python -m ifsq_hf.metrics [NAME ...]``: fetch and verify the LPIPS / FID weight files (see :mod:`.weights`)."""

from .weights import main

main()
