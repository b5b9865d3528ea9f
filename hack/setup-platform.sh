#!/usr/bin/env bash
# Everything the local platform needs, each step idempotent and cached: etcd, Kubernetes binaries, Kafka jars.
set -euo pipefail
dir=$(dirname "$0")
"$dir/install-etcd.sh"
"$dir/fetch-kafka.sh"
"$dir/build-k8s.sh"
