# Entry points named in the README. Everything installs what it needs first, idempotently:
# a Python virtualenv in .venv, and the local platform's binaries and jars in ~/.cache/wml-stream-operator.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
PYTEST_ARGS ?=

.PHONY: help venv platform-build platform-up platform-down platform-env platform-status \
        images node cluster-up cluster-down lint test test-unit test-integration test-e2e test-reliability reliability demo demo-down bench clean

help:
	@echo "make demo            the whole scenario on the local platform (make demo-down stops it)"
	@echo "make test            every suite (what CI runs): lint, unit, integration, e2e"
	@echo "make reliability     the fault and fuzz suites with full counts; rewrites docs/RELIABILITY.md"
	@echo "make test-unit | test-integration | test-e2e | test-reliability | lint | bench"
	@echo "make platform-up | platform-down | platform-env | platform-status"
	@echo "make images          both images of the Dockerfile, built with buildah (no Docker engine needed)"
	@echo "make node            what the local node needs: containerd, runc, CNI plugins, its pause image"
	@echo "make cluster-up      a control plane with a node of this machine (root), deploy/ applied on it"

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed: set PYTHON=python3.11")'
	@echo "Creating $(VENV) and installing the Python packages (a minute or two, once)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[server,dev,spark]'
	@touch $@

venv: $(VENV)/.installed

platform-build: venv
	@hack/setup-platform.sh

# Both targets of the Dockerfile, built with buildah on a base made from Debian's packages (hack/build-images.sh:
# about 2 minutes cold, 20 s cached). tests/e2e/test_images.py runs it again (cached) before it runs them.
images:
	@hack/build-images.sh

# The local node's own prerequisites (hack/setup-node.sh; the kubelet, kube-scheduler and kube-proxy come with
# platform-build): containerd, runc and the CNI plugins from Debian, the pause image built from hack/node/pause.c.
# tests/e2e/test_in_cluster.py starts the node itself (localplatform/wml_localplatform/node.py).
node: platform-build images
	@hack/setup-node.sh

# A control plane with a node of this machine, a broker its pods reach, and `kubectl apply -k` of deploy/ with
# components/wml-server on it: the operator and the service as pods (root only; one per machine).
cluster-up: venv node
	@$(PY) -m wml_localplatform cluster-up

cluster-down: venv
	@$(PY) -m wml_localplatform cluster-down

platform-up: venv platform-build
	@$(PY) -m wml_localplatform up

platform-down: venv
	@$(PY) -m wml_localplatform down

platform-env: venv
	@$(PY) -m wml_localplatform env

platform-status: venv
	@$(PY) -m wml_localplatform status

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy operator/wml_api operator/wml_operator server/wml_server localplatform/wml_localplatform
	$(VENV)/bin/hadolint Dockerfile

# One pytest session for every suite, so the platform starts once. pytest's exit code 5 (nothing
# collected) fails the target like any other failure.
test: venv platform-build images node lint
	$(PYTEST) tests $(PYTEST_ARGS)

test-unit: venv
	$(PYTEST) tests/unit $(PYTEST_ARGS)

test-integration: venv platform-build
	$(PYTEST) tests/integration $(PYTEST_ARGS)

test-e2e: venv platform-build images node
	$(PYTEST) tests/e2e $(PYTEST_ARGS)

test-reliability: venv platform-build
	$(PYTEST) tests/reliability $(PYTEST_ARGS)

# The fault suite, the fuzzers and the generated bad input with the full counts of docs/RELIABILITY.md (about
# 22 minutes on 2 cores), then the document itself, from the figures the run recorded. `make test` runs the
# same cases with reduced counts.
RELIABILITY_FIGURES := $(or $(TMPDIR),/tmp)/wso-reliability-figures.json
reliability: venv platform-build
	rm -f $(RELIABILITY_FIGURES)
	WSO_RELIABILITY=full WSO_RELIABILITY_REPORT=$(RELIABILITY_FIGURES) \
		$(PYTEST) tests/reliability tests/unit/test_operator_bad_input.py $(PYTEST_ARGS)
	WSO_RELIABILITY=full $(PY) -m tests.reliability.report $(RELIABILITY_FIGURES) docs/RELIABILITY.md

# The scenario of the README on the local platform; it stays up until `make demo-down`. State, logs and
# PID files live in $WSO_DEMO_DIR (default /tmp/wml-stream-operator/demo).
# SPARK=1: the sample's stream runs on a local Spark cluster (about a minute more).
demo: venv platform-build
	@$(PY) -m wml_localplatform.demo up $(if $(filter 1 true yes,$(SPARK)),--spark)

demo-down: venv
	@$(PY) -m wml_localplatform.demo down

# Benchmarks print figures; nothing here asserts on time. Each also writes its figures as JSON into
# BENCH_FIGURES, from which bench/write_performance.py writes docs/PERFORMANCE.md. The stream benchmark starts its
# own Kafka broker (or uses WSO_KAFKA_BOOTSTRAP): 18 runs of 100,000 records and two latency runs, about 12
# minutes on 2 cores; the operator's starts its own kube-apiserver, etcd, WML service (accept-only) and operator:
# 10, 100 and 1,000 resources, about 10 minutes; the churn benchmark runs 10,000 create/delete cycles in the same
# kind of world and reads the operator's memory before and after, about 20 minutes; the Secrets benchmark creates
# 10,000 unrelated Secrets of 48 KB (480 MB in etcd) beside 1,000 resources and reads the operator's memory after
# restarts, its CPU for 1,000 updates of them and a rotation, about 10 minutes; the sample models' trains a
# scikit-learn and a Spark model on the tweets, about 2 minutes (and once a 584 MB pyspark venv in the cache,
# about a minute); the Spark one runs streams on a standalone cluster of 1 and 2 workers beside the built-in
# engine, and their latency per trigger interval, about 15 minutes. About 72 minutes in all.
# BENCH_OPERATOR_ARGS passes the operator's options (e.g. --sizes 10,100 --steady-seconds 60 for a quick look),
# BENCH_CHURN_ARGS the churn's (e.g. --cycles 1000, or --hold 10000 for the RSS holding 10,000 at once),
# BENCH_SECRETS_ARGS the Secrets' (e.g. --secrets 2000).
BENCH_FIGURES := $(or $(TMPDIR),/tmp)/wso-bench-figures
BENCH_OPERATOR_ARGS ?=
BENCH_CHURN_ARGS ?=
BENCH_SECRETS_ARGS ?=
bench: venv platform-build
	rm -rf $(BENCH_FIGURES) && mkdir -p $(BENCH_FIGURES)
	$(PY) bench/model_accuracy.py \
		--json $(BENCH_FIGURES)/model_accuracy.json
	$(PY) bench/train_sample_models.py --spark \
		--json $(BENCH_FIGURES)/train_sample_models.json
	$(PY) bench/stream_throughput.py \
		--json $(BENCH_FIGURES)/stream_throughput.json
	$(PY) bench/spark_throughput.py \
		--json $(BENCH_FIGURES)/spark_throughput.json
	$(PY) bench/operator_scale.py \
		--json $(BENCH_FIGURES)/operator_scale.json $(BENCH_OPERATOR_ARGS)
	$(PY) bench/operator_churn.py \
		--json $(BENCH_FIGURES)/operator_churn.json $(BENCH_CHURN_ARGS)
	$(PY) bench/operator_secrets.py \
		--json $(BENCH_FIGURES)/operator_secrets.json $(BENCH_SECRETS_ARGS)
	$(PY) bench/operator_failover.py \
		--json $(BENCH_FIGURES)/operator_failover.json
	$(PY) bench/write_performance.py \
		--dir $(BENCH_FIGURES) --out docs/PERFORMANCE.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
