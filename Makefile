# npower: two commands on a fresh clone: `make demo` (main job) and `make test` (test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PACK   ?= amd-epyc
# Frontend dependencies for the tests, pinned (torch 2.13.0 is the CPU build; an unpinned torch pulls CUDA).
FRONTEND_DEPS := torch==2.13.0 onnxscript==0.7.2 tensorflow-cpu==2.21.0 tf2onnx==1.17.0
export ORT_DISABLE_TELEMETRY := 1

PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check
# Two install markers: the core (onnx, numpy, pyyaml: all `analyze` needs) and, on top, the frontend and
# test extras. `make demo` installs the core only; `make test` adds the extras, also on a demo's venv.
CORE   := $(BIN)/.installed-core
EXTRAS := $(BIN)/.installed-extras

.PHONY: install install-core demo test bench accuracy memory clean

install-core: $(CORE)
install: $(EXTRAS)

$(CORE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(EXTRAS): $(CORE)
	$(PIP) $(FRONTEND_DEPS)
	$(PIP) -e '.[test]'
	touch $@

demo: $(CORE)  ## analyze the shipped example network with the shipped CPU pack (core install only)
	$(BIN)/npower analyze examples/resnet50.onnx --gpu $(PACK)

test: $(EXTRAS)  ## the test suite (what CI runs)
	$(BIN)/python -m pytest

bench: $(EXTRAS)  ## speed benchmarks: cold analyze vs onnx shape inference alone; profile planning
	$(BIN)/python benchmarks/analyze_speed.py
	$(BIN)/python benchmarks/plan_speed.py

memory: $(EXTRAS)  ## peak RSS and wall time of the test suite, per test file and whole
	$(BIN)/python benchmarks/test_memory.py --whole

accuracy: $(EXTRAS)  ## whole-network accuracy: npower vs Paleo vs measured, on this machine
	$(BIN)/python benchmarks/accuracy.py --gpu $(PACK)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
