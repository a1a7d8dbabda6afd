# `make setup` builds .venv and installs the project; `make test` lints and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Where the CPU build of torch lives when no local copy of it is found.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=

.PHONY: setup browser test demo compare bench lint format clean

setup: $(VENV)/.setup-done

# Re-runs only when pyproject.toml changes, so `make setup` is cheap to call again.
$(VENV)/.setup-done: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# torch goes in first and pinned: left to the dependency resolver, a machine without CUDA would
	@# download a multi-GB CUDA build that it cannot use.
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		echo "CUDA found: installing torch $(TORCH_VERSION) with CUDA"; \
		$(BIN)/pip install "torch==$(TORCH_VERSION)"; \
	else \
		echo "no CUDA: installing the CPU build of torch $(TORCH_VERSION)"; \
		$(BIN)/pip install "torch==$(TORCH_VERSION)+cpu" \
			|| $(BIN)/pip install "torch==$(TORCH_VERSION)+cpu" --extra-index-url $(TORCH_CPU_INDEX); \
	fi
	$(BIN)/pip install -e ".[dev,space,demo]"
	touch $@

# The main job: train the four methods on the bundled reviews, write outputs/demo/report.md, open the Space.
# MODEL=<hub id or folder> replaces the offline all-MiniLM-L6-v2; LAUNCH=0 skips opening the Space.
LAUNCH ?= 1
MODEL ?=
demo: setup
	$(BIN)/python demo/run_demo.py --launch $(LAUNCH) $(if $(MODEL),--model_name_or_path $(MODEL))

# The same pipeline on your own data: make compare TRAIN=my.csv TEST=my_test.csv TEXT=review LABEL=stars MODEL=...
# TRAIN is required; VALIDATION (default: 10% held out from TRAIN), TEST, TEXT and LABEL (default text and label),
# MODEL, SAMPLES_PER_LABEL (SetFit's, default 16), FLAGS (more flags for all four) and OUT are optional.
OUT ?= outputs/compare
compare: setup
	@test -n "$(TRAIN)" || { echo "error: make compare needs TRAIN=<training file: csv, json, jsonl or parquet>" >&2; exit 2; }
	$(BIN)/python demo/run_demo.py --launch $(LAUNCH) --output_dir $(OUT) --train_file $(TRAIN) \
		$(if $(VALIDATION),--validation_file $(VALIDATION)) $(if $(TEST),--test_file $(TEST)) \
		$(if $(TEXT),--text_column_name $(TEXT)) $(if $(LABEL),--label_column_name $(LABEL)) \
		$(if $(MODEL),--model_name_or_path $(MODEL)) $(if $(SAMPLES_PER_LABEL),--samples_per_label $(SAMPLES_PER_LABEL)) \
		$(if $(FLAGS),--flags "$(FLAGS)")

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The browser test drives the system's Chromium: Playwright's own browser download needs a network we lack.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: lint browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every benchmarks/<name>.py (files starting with _ are their helpers) runs in turn and writes
# benchmarks/results/<name>.md; then benchmarks/results.md gets a header and every section. BENCH_ARGS go to each.
BENCH_ARGS ?=
bench: setup
	@set -e; names=""; for script in $$(ls benchmarks/[!_]*.py); do \
		name=$$(basename $$script .py); names="$$names $$name"; \
		echo "== $$script"; $(BIN)/python $$script $(BENCH_ARGS); \
	done; \
	$(BIN)/python benchmarks/_report.py "make bench$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" $$names

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
