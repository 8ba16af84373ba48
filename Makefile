# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= outputs
TEST_ENV := HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup demo test lint bench clean

setup:
	@VENV=$(VENV) scripts/setup_env.sh

demo: setup
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(PY) examples/demo.py --output_dir $(OUT)

test: setup
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadgroup tests

lint: setup
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks

bench: setup
	$(PY) benchmarks/bench_quantizer.py

clean:
	rm -rf $(OUT) build dist src/*.egg-info
