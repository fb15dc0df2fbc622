# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# The venv is created on first use; torch is installed first from the local CPU wheel so
# that no dependency can pull a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0

.PHONY: install demo test lint app bench clean world-model shape-classifier

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

# The benchmarks of BENCHMARKS.md, each printing lorabooth and its anchor side by side (minutes).
bench: $(STAMP)
	$(BIN)/python scripts/bench_lora.py --out bench_lora.json
	$(BIN)/python scripts/bench_formats.py --json bench_formats.json
	$(BIN)/python scripts/bench_train.py

# The shipped world model's recipe (about 1 h 45 min on 2 CPU cores; `--resume` continues a
# killed run), then its scores into assets/world-model/scores.json. See assets/world-model/README.md.
world-model: $(STAMP)
	mkdir -p runs/world
	$(BIN)/python scripts/train_world_model.py --out assets/world-model --work_dir runs/world
	$(BIN)/python scripts/eval_world_model.py --model assets/world-model

# The evaluator's shape classifier, world/shape_classifier.safetensors (about 13 min).
shape-classifier: $(STAMP)
	$(BIN)/python scripts/train_shape_classifier.py

clean:
	rm -rf $(VENV) build *.egg-info
