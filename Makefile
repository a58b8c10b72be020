# Every target creates .venv and installs what it needs on first use.
PY ?= python3
BIN := .venv/bin
KERNELS := $(wildcard src/smg/_ext/*.pyx src/smg/_ext/*.pxd src/smg/_ext/*.h)
PORT ?= 8000

.PHONY: run test test-compiled test-pure compile bench clean

$(BIN)/python:
	$(PY) -m venv .venv
	$(BIN)/pip install -q --upgrade pip "setuptools>=77" wheel "Cython>=3.0.10"

.venv/.installed: pyproject.toml setup.py $(KERNELS) | $(BIN)/python
	# The CPU build of torch for TorchEngine's test (a plain range would pull a CUDA build).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-build-isolation -e '.[test]'
	touch $@

## run: the main job: an OpenAI-compatible endpoint on http://127.0.0.1:$(PORT)/v1 in front of the
## reference CPU engine (started in-process) with the real Llama 3.2 tokenizer
run: .venv/.installed
	$(BIN)/python -m smg serve --demo --port $(PORT)

## test: the whole suite on the compiled kernels, then on the pure-Python twins
test: test-compiled test-pure

test-compiled: .venv/.installed
	SMG_HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q -p no:cacheprovider --durations=30

test-pure: .venv/.installed
	SMG_HYPOTHESIS_PROFILE=ci SMG_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=30 -m "not compiled_only and not end_to_end and not no_kernels"

## compile: rebuild the Cython kernels in place after editing them
compile: | $(BIN)/python
	$(BIN)/python setup.py -q build_ext --inplace

bench: .venv/.installed
	$(BIN)/python -m benchmarks.bench_tokenizer
	$(BIN)/python -m benchmarks.bench_detokenizer
	$(BIN)/python -m benchmarks.bench_parsers
	$(BIN)/python -m benchmarks.bench_pool
	$(BIN)/python -m benchmarks.bench_gateway
	$(BIN)/python -m benchmarks.bench_protocol
	$(BIN)/python -m benchmarks.bench_multimodal
	$(BIN)/python -m benchmarks.bench_agentic
	$(BIN)/python -m benchmarks.bench_mcp
	$(BIN)/python -m benchmarks.bench_processes
	$(BIN)/python -m benchmarks.bench_soak

clean:
	rm -rf build src/smg/_ext/*.so src/smg/_ext/*.c src/*.egg-info .venv
