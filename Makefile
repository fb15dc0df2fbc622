# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# The venv is created on first use; torch is installed first from the local CPU wheel so
# that no dependency can pull a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: install demo test lint app bench clean world-model

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $$(ls /opt/wheels/torch-$(TORCH_VERSION)*.whl 2>/dev/null || echo torch==$(TORCH_VERSION))
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m lorabooth.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

app: $(STAMP)
	$(BIN)/python -m lorabooth.app

clean:
	rm -rf $(VENV) build *.egg-info
