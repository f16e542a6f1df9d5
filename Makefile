# Two commands for a new user: `make run` and `make test`. Each sets up what it needs by itself.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
SCAN_VENV := .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed
SAM_VENV := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
# three workers on two cores: the tests wait on simulators and queues as much as they compute (pytest 250 s with
# three against 298 s with two, same suite, same machine)
PYTEST_WORKERS ?= 3
export AWS_DEFAULT_REGION ?= eu-west-1
export SAM_CLI_TELEMETRY := 0

.PHONY: run test build lint format checks scan unit bench bytecode clean venv

venv: $(STAMP)

$(STAMP): requirements-dev.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	@touch $@

## run: start the embedded local stack, run the demo end to end, print a report
run: $(STAMP)
	$(BIN)/efficy-sync demo

## test: lint, template and state-machine checks, then every test (in parallel; tests/artifact runs `make build`)
test: $(STAMP) $(NODE_STAMP) $(SAM_STAMP) lint checks bytecode
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup -q -p no:cacheprovider

# The checkout's byte code, written once. Where PYTHONDONTWRITEBYTECODE is set (CI machines, this one) nothing
# else writes it, and each of the suite's subprocesses (330 CLI calls, the local stacks, the probes) compiled
# every module of ours it imported: 0.12 s of a `config validate`'s 0.61 s of CPU. Python still checks each
# file against its source, so an edited module is compiled again, as without it.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 layers/shared/python tools functions bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

checks: $(STAMP) $(NODE_STAMP) scan
	$(BIN)/cfn-lint template.yaml
	npx --no-install asl-validator --json-path statemachines/full_sync.asl.json

$(SCAN_STAMP): requirements-scan.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found)"; exit 1; }
	test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-scan.txt
	@touch $@

## scan: policy scan of template.yaml (checkov); each accepted finding is skipped in the template with its reason
scan: $(SCAN_STAMP)
	$(SCAN_VENV)/bin/checkov -f template.yaml --framework cloudformation --quiet --compact --skip-download

$(SAM_STAMP): requirements-sam.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found)"; exit 1; }
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-sam.txt
	@touch $@

# Byte code in the artifact: Lambda's /opt and /var/task are read-only, so without it every cold start compiles
# every module it imports (importing the apply-changes handler: 1.94 s of CPU against 1.06 s). Unchecked hashes: a
# zip keeps modification times to 2 s only and a timestamp-checked .pyc could be judged stale and recompiled.
## build: the deployable artifact in .aws-sam/build (sam build; arm64 wheels from the package index, no Docker)
build: $(SAM_STAMP)
	$(SAM_VENV)/bin/sam build
	$(SAM_VENV)/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash .aws-sam/build

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

## bench: long measurements; rewrites BENCHMARKS.md
bench: $(STAMP) bytecode
	$(BIN)/python -m bench.run --out BENCHMARKS.md

clean:
	rm -rf $(VENV) $(SCAN_VENV) $(SAM_VENV) .aws-sam node_modules .pytest_cache .ruff_cache .hypothesis
