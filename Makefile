# Tongban — make help lists the targets. Every target is safe to run twice.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The newest python3.x on the PATH, 3.11 or later (the lock holds every version from 3.11 up).
# A name on the PATH is not enough (pyenv shims answer for versions that are not active): it must run.
PYTHON ?= $(shell for v in 3.14 3.13 3.12 3.11; do python$$v -c '' >/dev/null 2>&1 && { echo python$$v; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Load the addresses of the local PostgreSQL and Kafka written by `make infra-up`.
INFRA_ENV = set -a; [ -f var/infra.env ] && . var/infra.env; set +a;

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock pyproject.toml
	@[ -n "$(PYTHON)" ] && command -v $(PYTHON) >/dev/null || { echo "Python 3.11 or later is required (python3.11 … python3.14 on the PATH)"; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(VENV)/bin/uv pip sync -q --python $(PY) --require-hashes requirements.lock
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv with the locked dependencies

lock: $(STAMP) ## Re-resolve requirements.lock from pyproject.toml
	$(VENV)/bin/uv pip compile pyproject.toml --group dev --generate-hashes --universal --python-version 3.11 -q -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml -c requirements.lock --generate-hashes --universal --python-version 3.11 -q -o requirements-runtime.lock

run: $(STAMP) assets ## Start the whole platform, embedded (one process, PostgreSQL under var/), and print how to use it
	$(PY) -m services.embedded

assets: $(STAMP) ## Fetch the console's htmx, Pico CSS, ECharts (and the tests' axe-core) when missing (pinned, checksummed: services/console/assets.toml)
	$(PY) -m services.console.assets

messages: $(STAMP) ## Extract the console's messages into its catalogues (then translate the new zh_CN entries)
	@mkdir -p var
	$(VENV)/bin/pybabel extract -F services/console/babel.cfg -k N_ --no-location --omit-header --sort-output -o var/console-messages.pot .
	$(VENV)/bin/pybabel update -i var/console-messages.pot -d services/console/translations -D messages --omit-header --ignore-obsolete --no-fuzzy-matching

# The console's browser tests drive Debian's chromium through Playwright (browser downloads are not
# possible), with a CJK font so that its screenshots show the Chinese pages (fonts-wqy-microhei).
chromium: ## Install Debian's chromium (and a CJK font) when missing (apt-get, as root)
	@{ command -v chromium >/dev/null && fc-list :lang=zh | grep -q .; } || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-wqy-microhei; } || { echo "the console's browser tests need Debian's chromium and a CJK font: sudo apt-get install chromium fonts-wqy-microhei"; exit 1; }

infra-up: $(STAMP) ## Start real PostgreSQL and Apache Kafka (KRaft) for tests and distributed mode
	$(PY) deploy/local/infra.py up

infra-down: ## Stop them, leaving no process behind
	@if [ -x $(PY) ]; then $(PY) deploy/local/infra.py down; else python3 deploy/local/infra.py down; fi

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check services tests bench deploy
	$(VENV)/bin/ruff format --check services tests bench deploy
	$(VENV)/bin/mypy

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix services tests bench deploy
	$(VENV)/bin/ruff format services tests bench deploy

proto: $(STAMP) ## Regenerate services/common/pb from proto/
	$(PY) -m grpc_tools.protoc -Iproto --python_out=services/common/pb --pyi_out=services/common/pb proto/*.proto

test: $(STAMP) infra-up lint kustomize assets chromium ## Install, start PostgreSQL and Kafka, lint, run every test
	$(INFRA_ENV) CI=$${CI:-} $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP) infra-up assets ## Every benchmark: query round trip vs raw Kafka, registry, gateway, audit, console (long); writes bench/results/
	$(INFRA_ENV) $(PY) -m bench.skeleton
	$(INFRA_ENV) $(PY) -m bench.registry
	$(INFRA_ENV) $(PY) -m bench.gateway
	$(INFRA_ENV) $(PY) -m bench.audit
	$(INFRA_ENV) $(PY) -m bench.evidence
	$(INFRA_ENV) $(PY) -m bench.batch
	$(INFRA_ENV) $(PY) -m bench.console

bench-evidence: $(STAMP) infra-up ## Evidence bundle (5 materials) p50/p99 next to a single query; writes bench/results/
	$(INFRA_ENV) $(PY) -m bench.evidence

bench-registry: $(STAMP) infra-up ## Registry only: search, create, .xlsx import (and as a job), approve round trip on 100,000 entries; writes bench/results/
	$(INFRA_ENV) $(PY) -m bench.registry

bench-gateway: $(STAMP) infra-up ## Gateway pass-through vs bare uvicorn, token endpoint per auth method; writes bench/results/
	$(INFRA_ENV) $(PY) -m bench.gateway

bench-audit: $(STAMP) infra-up ## Audit: ingest vs raw COPY, inclusion proofs at 10M, query p95 (over 15 min); writes bench/results/
	$(INFRA_ENV) $(PY) -m bench.audit

bench-audit-ingest: $(STAMP) infra-up ## Audit ingest vs raw COPY only (python -m bench.audit --only ingest; under a minute)
	$(INFRA_ENV) $(PY) -m bench.audit --only ingest

bench-scale: $(STAMP) infra-up ## Queries per second with one and with two exchange replicas; writes bench/results/
	$(INFRA_ENV) $(PY) -m bench.scale

bench-console: $(STAMP) infra-up assets ## Console render time: catalogue, queue, audit search on 100,000 entries and 1,000,000 audit events; writes bench/results/
	$(INFRA_ENV) $(PY) -m bench.console

bench-batch: $(STAMP) infra-up ## Exchange batches: subjects per second, next to single queries; writes bench/results/
	$(INFRA_ENV) $(PY) -m bench.batch

migration: $(STAMP) infra-up ## New Alembic revision: make migration S=<service> M="<message>"
	$(INFRA_ENV) $(PY) -m services.common.make_migration $(S) "$(M)"

regions: $(STAMP) ## Rebuild services/common/data/gb2260.tsv (GB/T 2260 codes) from its pinned, checksummed source
	$(PY) services/common/data/refresh_regions.py

# deploy/k8s is rendered with kustomize: kubectl's built-in one, or else kustomize itself, built
# once from the Go module proxy (pinned) into var/bin.
KUSTOMIZE_VERSION := v5.6.0
kustomize: ## Make sure a kustomize renderer is there (kubectl's, or build var/bin/kustomize)
	@command -v kubectl >/dev/null || [ -x var/bin/kustomize ] || { echo "building kustomize $(KUSTOMIZE_VERSION) (first run only)"; GOBIN=$(CURDIR)/var/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); }

manifests: $(STAMP) kustomize ## Regenerate deploy/k8s's PrometheusRule from deploy/monitoring, render both overlays into var/k8s/
	$(PY) deploy/k8s/prometheusrule.py
	@mkdir -p var/k8s
	@render=$$(command -v kubectl >/dev/null && echo "kubectl kustomize" || echo var/bin/kustomize build); \
	for o in dev prod; do $$render deploy/k8s/overlays/$$o > var/k8s/$$o.yaml && echo "rendered var/k8s/$$o.yaml"; done

image: $(STAMP) assets ## Build the container image (podman; the base from Debian packages, cached in var/image)
	$(PY) deploy/image.py build

image-test: $(STAMP) infra-up assets ## Build the image, inspect it, run the gateway in it until /healthz answers
	$(INFRA_ENV) $(PY) deploy/image.py check

clean: infra-down ## Stop infrastructure and remove var/ (data, logs, cached Kafka jars)
	rm -rf var

.PHONY: help venv lock run assets messages chromium infra-up infra-down lint format proto test bench bench-evidence bench-registry bench-gateway bench-audit bench-audit-ingest bench-scale bench-batch bench-console migration regions manifests image image-test clean
