#!/usr/bin/env bash
# Makes sure an etcd server binary exists: Debian's etcd-server package (it does not start a service
# without systemd, which is what we want: localplatform/wml_localplatform starts and stops it).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if command -v etcd >/dev/null 2>&1; then
  log "etcd found: $(command -v etcd) ($(etcd --version 2>/dev/null | head -n1))"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || die "etcd is not installed and apt-get is not available: install etcd 3.4+ and put it on PATH"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "etcd is not installed: run 'apt-get install $ETCD_DEBIAN_PACKAGE' as root"
  sudo=sudo
fi
mkdir -p "$WSO_CACHE/logs"
run_with_progress "apt-get install $ETCD_DEBIAN_PACKAGE" "$WSO_CACHE/logs/install-etcd.log" \
  bash -c "$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $ETCD_DEBIAN_PACKAGE"
command -v etcd >/dev/null 2>&1 || die "apt-get installed $ETCD_DEBIAN_PACKAGE but no etcd is on PATH"
log "etcd installed: $(etcd --version | head -n1)"
