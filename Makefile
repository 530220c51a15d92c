# npower: two commands on a fresh clone: `make demo` (main job) and `make test` (test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PACK   ?= amd-epyc-cpu-ort1.32-fp32
# Frontend dependencies for the tests, pinned (torch 2.13.0 is the CPU build; an unpinned torch pulls CUDA).
FRONTEND_DEPS := torch==2.13.0 onnxscript==0.7.2 tensorflow-cpu==2.21.0 tf2onnx==1.17.0
export ORT_DISABLE_TELEMETRY := 1

.PHONY: install demo test bench accuracy clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(FRONTEND_DEPS)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: install  ## analyze the shipped example network with the shipped CPU pack
	$(BIN)/npower analyze examples/resnet50.onnx --gpu $(PACK)

test: install  ## the test suite (what CI runs)
	$(BIN)/python -m pytest

bench: install  ## speed benchmark: cold analyze vs onnx shape inference alone
	$(BIN)/python benchmarks/analyze_speed.py

accuracy: install  ## whole-network accuracy: npower vs Paleo vs measured, on this machine
	$(BIN)/python benchmarks/accuracy.py --gpu $(PACK)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
