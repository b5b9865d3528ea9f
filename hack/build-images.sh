#!/usr/bin/env bash
# Builds both images of the Dockerfile (targets operator and wml-server) without a Docker engine: buildah
# builds, podman runs them (tests/e2e/test_images.py). Idempotent and cached:
# - the tools come from Debian's packages (apt-get, once);
# - no container registry is reachable here, so the Dockerfile's base (python:3.11-slim elsewhere) is made from
#   Debian's own packages with mmdebstrap: Debian $IMAGE_BASE_SUITE's Python 3.11, its tar cached in
#   $WSO_CACHE/images keyed by suite and package list, and passed as the build argument PYTHON_IMAGE;
# - the layers are cached by buildah (--layers): a second build with the same sources takes seconds.
# The Dockerfile itself is the one `docker build` uses on any other machine, unchanged.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
REPO=$(cd "$HACK_DIR/.." && pwd)

tools=(buildah podman mmdebstrap)
missing=()
for t in "${tools[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt_install install-image-tools buildah podman mmdebstrap
fi

# The base: what the Dockerfile's stages need of python:3.11-slim (python, python -m venv, groupadd/useradd,
# CA certificates), from Debian's packages. Documentation and locales are left out, as the slim image does.
packages="python3,python3-venv,python-is-python3,ca-certificates"
key=$(printf '%s %s' "$IMAGE_BASE_SUITE" "$packages" | sha256sum | cut -c1-12)
base_tar="$WSO_CACHE/images/base-$IMAGE_BASE_SUITE-$key.tar"
base_image="localhost/wso-base-python:$IMAGE_BASE_SUITE-$key"
mkdir -p "$WSO_CACHE/images" "$WSO_CACHE/logs"
if [ ! -s "$base_tar" ]; then
  # The host's apt sources (a file mmdebstrap pastes into the new system): no mirror is named here.
  sources=$(ls /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
  [ -n "$sources" ] || sources=/etc/apt/sources.list
  run_with_progress "mmdebstrap $IMAGE_BASE_SUITE ($packages)" "$WSO_CACHE/logs/image-base.log" \
    mmdebstrap --variant=minbase --include="$packages" --aptopt='Acquire::Retries "3"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      "$IMAGE_BASE_SUITE" "$base_tar.tmp" "$sources"
  mv "$base_tar.tmp" "$base_tar"
fi
if ! buildah inspect --type image "$base_image" >/dev/null 2>&1; then
  log "Importing the base image $base_image"
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$base_tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "$ctr"
  buildah commit --quiet "$ctr" "$base_image" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

# pip inside the build trusts what this machine trusts: the host's CA bundle is mounted over the base's for the
# RUN steps only (never stored in a layer), so a machine behind a TLS-inspecting proxy builds as well.
ca_mount=()
[ -s /etc/ssl/certs/ca-certificates.crt ] && \
  ca_mount=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
for target in operator wml-server; do
  case $target in
    operator) tag=$OPERATOR_IMAGE ;;
    wml-server) tag=$SERVER_IMAGE ;;
  esac
  start=$SECONDS
  run_with_progress "buildah bud --target $target" "$WSO_CACHE/logs/image-$target.log" \
    buildah bud --layers --target "$target" --build-arg "PYTHON_IMAGE=$base_image" "${ca_mount[@]}" \
      -t "$tag" -f "$REPO/Dockerfile" "$REPO"
  size=$(podman image inspect --format '{{.Size}}' "$tag")
  log "$tag: $((size / 1000000)) MB, built in $((SECONDS - start)) s"
done
