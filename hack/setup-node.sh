#!/usr/bin/env bash
# What the local platform's node needs besides the kubelet and kube-scheduler (hack/build-k8s.sh builds those):
# - containerd, runc and the CNI plugins from Debian's packages (apt-get, once; nothing is started here: the
#   platform runs containerd with a configuration of its own, localplatform/wml_localplatform/node.py);
# - the pod sandbox ("pause") image: no registry is reachable, so a static build of hack/node/pause.c in a
#   scratch image, kept in buildah's storage (imported into the node's containerd at each start).
# Idempotent: a second run installs and builds nothing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

packages=()
command -v containerd >/dev/null 2>&1 || packages+=(containerd)
command -v runc >/dev/null 2>&1 || packages+=(runc)
[ -x /usr/lib/cni/bridge ] || packages+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || packages+=(iptables)
command -v ip >/dev/null 2>&1 || packages+=(iproute2)
command -v gcc >/dev/null 2>&1 || packages+=(gcc)
[ -f "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || packages+=(libc6-dev)  # the pause program is static
if [ ${#packages[@]} -gt 0 ]; then
  apt_install install-node-tools "${packages[@]}"
fi
need buildah "run hack/build-images.sh first (it installs buildah)"

if ! buildah inspect --type image "$PAUSE_IMAGE" >/dev/null 2>&1; then
  log "Building the pod sandbox image $PAUSE_IMAGE"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  gcc -static -O2 -Wall -Wextra -o "$work/pause" "$HACK_DIR/node/pause.c"
  strip "$work/pause"
  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$work/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  buildah commit --quiet "$ctr" "$PAUSE_IMAGE" >/dev/null
  buildah rm "$ctr" >/dev/null
fi
log "node prerequisites ready: containerd $(containerd --version | awk '{print $3}'), $PAUSE_IMAGE"
