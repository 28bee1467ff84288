# model-serving-gitops: every command a contributor needs. `make demo` and `make test` set everything up.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO := build/demo
# pytest workers: one per core unless told otherwise (`make test JOBS=1`)
JOBS ?= auto

.PHONY: help setup tools crds control-plane engines schemas lint test test-fast test-gitops demo clean fuzz-long mutation

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(INSTALLED) tools crds ## create .venv, install the project, the pinned kustomize + kubeconform, the pinned CRDs

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

tools: $(INSTALLED)
	@$(BIN)/servingops tools install

control-plane: $(INSTALLED) ## the pinned kube-apiserver for `validate --server` (Go build, ~20 min once)
	@$(BIN)/servingops tools install kube-control-plane

engines: $(INSTALLED) ## Argo CD + Flux controllers for `cluster-check --gitops`, built from their release modules once
	@$(BIN)/python -m servingops.engines

# The pinned CRDs of every KServe release: ../shared when it is there, else fetched (sha256-checked) into .cache/upstream.
crds: $(INSTALLED)
	@$(BIN)/servingops schemas fetch

schemas: setup ## build the offline schema store (.cache/schemas)
	$(BIN)/servingops schemas build

lint: setup ## ruff over the tooling, tests and scripts: pyflakes, pycodestyle errors, bugbear, pyupgrade
	$(BIN)/ruff check .

test: setup control-plane lint ## run every test (the full overlay matrix and the kube-apiserver checks included)
	$(BIN)/pytest -n $(JOBS) --dist loadgroup -m "not gitops"

test-gitops: setup engines ## the real Argo CD and Flux sync a generated repo in a cluster in a box
	$(BIN)/pytest -n $(JOBS) --dist loadgroup -m gitops

# The tooling's own tests, none of which renders the template: about a minute on 2 cores (measured in
# docs/performance.md). Rendering, copier update, examples and the matrix run in `make test`.
FAST_TESTS := tests/test_tools.py tests/test_crdschema.py tests/test_validate.py

test-fast: setup ## the tooling's unit tests, nothing rendered (about a minute on 2 cores); `make test` runs all
	$(BIN)/pytest -n $(JOBS) --dist loadgroup -m "not slow" $(FAST_TESTS)

fuzz-long: setup ## hostile strings in every free-text answer, >= 10,000 examples (about 30 minutes on 2 cores)
	@mkdir -p build
	@set -o pipefail; HYPOTHESIS_PROFILE=long $(BIN)/pytest -n 2 --hypothesis-show-statistics \
		tests/test_hostile_strings.py 2>&1 | tee build/fuzz-long.log; status=$$?; \
	awk '/ passing, .* failing/ {n = $$2 + $$4 + $$7; p += $$2; f += $$4} /%, rendered$$/ {r += $$2 * n / 100} \
		END {printf "fuzz-long: %d examples (%d rendered and validated, the rest refused), %d failing; log: build/fuzz-long.log\n", \
		p + f, r + 0.5, f}' build/fuzz-long.log; exit $$status

mutation: setup ## mutation testing of lint, the Helm importer and validation (hours; docs/quality.md): MUTATION_SAMPLE=N samples, MUTATION_SCOPE=changed scores a branch
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,dev]'
	scripts/mutation $(MODULES)

demo: setup ## generate a repo from the default answers into build/demo and validate every overlay
	$(BIN)/servingops demo --out $(DEMO)

clean: ## remove everything make created
	rm -rf $(VENV) .tools .cache build .pytest_cache .hypothesis
