# Every target creates .venv and installs what it needs on first use.
PY ?= python3
BIN := .venv/bin
KERNELS := $(wildcard src/smg/_ext/*.pyx src/smg/_ext/*.pxd)
TEXT ?= Explain in one sentence why tokenization belongs in the gateway.

.PHONY: run test test-compiled test-pure compile bench clean

$(BIN)/python:
	$(PY) -m venv .venv
	$(BIN)/pip install -q --upgrade pip "setuptools>=77" wheel "Cython>=3.0.10"

.venv/.installed: pyproject.toml setup.py $(KERNELS) | $(BIN)/python
	# The CPU build of torch for TorchEngine's test (a plain range would pull a CUDA build).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-build-isolation -e '.[test]'
	touch $@

## run: the main job (for now): render a chat turn with Llama 3.2's real tokenizer and encode it
run: .venv/.installed
	$(BIN)/python -m smg tokenize --tokenizer llama3.2 --chat --chat-template llama3 --show-text "$(TEXT)"

## test: the whole suite on the compiled kernels, then on the pure-Python twins
test: test-compiled test-pure

test-compiled: .venv/.installed
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-pure: .venv/.installed
	SMG_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m "not compiled_only"

## compile: rebuild the Cython kernels in place after editing them
compile: | $(BIN)/python
	$(BIN)/python setup.py -q build_ext --inplace

bench: .venv/.installed
	$(BIN)/python -m benchmarks.bench_tokenizer

clean:
	rm -rf build src/smg/_ext/*.so src/smg/_ext/*.c src/*.egg-info .venv
