#!/usr/bin/env bash
# Everything the local platform needs, each step idempotent and cached: etcd, Kubernetes binaries, Kafka jars,
# Spark's Kafka connector jars (Spark itself is pyspark, in the venv).
set -euo pipefail
dir=$(dirname "$0")
"$dir/install-etcd.sh"
"$dir/fetch-kafka.sh"
"$dir/fetch-spark-jars.sh"
"$dir/build-k8s.sh"
