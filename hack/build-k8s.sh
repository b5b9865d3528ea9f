#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kubectl of $K8S_VERSION, and the node's kubelet,
# kube-scheduler and kube-proxy, from Go modules (hack/k8s)
# into the cache. Cached binaries are kept by version: a second run builds nothing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need go "install Go (https://go.dev/doc/install or Debian's golang-go) to build the local Kubernetes API server"

commands=(kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler kube-proxy)
missing=()
for c in "${commands[@]}"; do
  [ -x "$WSO_BIN/$c-$K8S_VERSION" ] || missing+=("$c")
done
if [ ${#missing[@]} -eq 0 ]; then
  log "Kubernetes $K8S_VERSION binaries are cached in $WSO_BIN"
  exit 0
fi

ver=${K8S_VERSION#v}
major=${ver%%.*}; rest=${ver#*.}; minor=${rest%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# Go 1.27 turns the jsonv2 experiment on; Kubernetes 1.36 then serves broken OpenAPI.
export GOEXPERIMENT=nojsonv2
export GOFLAGS=-mod=readonly
mkdir -p "$WSO_CACHE/logs"
log "Building Kubernetes $K8S_VERSION (${missing[*]}) with $(go version | cut -d' ' -f3)."
log "The first build takes 5 to 10 minutes and about 3 GB of memory on 2 cores; later runs use the cache."
for c in "${missing[@]}"; do
  tmp="$WSO_BIN/.$c-$K8S_VERSION.tmp"
  run_with_progress "go build $c" "$WSO_CACHE/logs/build-$c.log" \
    bash -c "cd '$HACK_DIR/k8s' && go build -trimpath -ldflags '$ldflags' -o '$tmp' k8s.io/kubernetes/cmd/$c"
  mv "$tmp" "$WSO_BIN/$c-$K8S_VERSION"
done
"$WSO_BIN/kubectl-$K8S_VERSION" version --client
