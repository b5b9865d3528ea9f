# syntax=docker/dockerfile:1
#
# Two images from one distribution (pyproject.toml):
#   docker build --target operator   -t ghcr.io/wmlstream/wml-stream-operator:0.1.0 .
#   docker build --target wml-server -t ghcr.io/wmlstream/wml-server:0.1.0 .
# A plain `docker build .` builds the last stage: the operator.
#
# Each image copies a virtualenv built in a builder stage onto the same slim base (the venv's python links
# to the base's), so neither the source tree nor a pip cache reaches the final image.
# Both run as uid/gid 10001, matching runAsUser/fsGroup in deploy/, and keep nothing on the root
# filesystem at run time, so Kubernetes can mount it read-only.

# The base, pinned by tag; pass --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:... to pin a digest.
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builders ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Only what the build reads (see .dockerignore): the metadata, the readme it names, the two source roots.
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY server/ server/

# The operator: kopf, kubernetes, requests, pydantic. Versions come from pyproject.toml's ranges.
FROM builder AS builder-operator
RUN pip install --no-cache-dir .

# The WML service: the operator's packages plus FastAPI, uvicorn, confluent-kafka, vaderSentiment, ...
# "./[server]" is pip's spelling of ".[server]" that hadolint also reads as a local path (not as an
# unpinned PyPI name, rule DL3013); quoted so the shell does not treat [server] as a glob.
FROM builder AS builder-server
RUN pip install --no-cache-dir "./[server]"

# ---- common run-time base ------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# A named user with a fixed id, so `ps`, logs and file ownership read well; no home, no login shell.
RUN groupadd --system --gid 10001 wml \
 && useradd --system --uid 10001 --gid wml --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin wml
# No .pyc files (the root filesystem is read-only at run time), unbuffered logs for `kubectl logs`.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
LABEL org.opencontainers.image.vendor="wmlstream" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/wmlstream/wml-stream-operator"
# Kubernetes probes (deploy/) check health; a Docker HEALTHCHECK would only duplicate them.
HEALTHCHECK NONE
WORKDIR /tmp

# ---- the WML service -----------------------------------------------------------------------------
FROM runtime AS wml-server
LABEL org.opencontainers.image.title="wml-server" \
      org.opencontainers.image.description="Self-hosted WML v3 service that runs stream deployments (Kafka in, model, Kafka out)"
COPY --from=builder-server /opt/venv /opt/venv
# Bind to all interfaces inside the container (the default is loopback); keep data on the mounted volume.
# Off loopback `serve` needs WML_SERVER_TLS_CERT/KEY (deploy/ mounts them) or an explicit
# WML_SERVER_PLAIN_HTTP=true: the image does not choose plain HTTP for its users.
ENV WML_SERVER_HOST=0.0.0.0 \
    WML_SERVER_PORT=9443 \
    WML_SERVER_DATA_DIR=/data
USER 10001:10001
EXPOSE 9443
ENTRYPOINT ["python", "-m", "wml_server", "serve"]

# ---- the operator (last, so it is the default target) --------------------------------------------
FROM runtime AS operator
LABEL org.opencontainers.image.title="wml-stream-operator" \
      org.opencontainers.image.description="Kubernetes operator (kopf) for WML v3 stream deployments"
COPY --from=builder-operator /opt/venv /opt/venv
# Probes and metrics must be reachable by the kubelet and Prometheus, not only on loopback.
ENV WML_OPERATOR_HEALTH_ADDRESS=0.0.0.0:8080 \
    WML_OPERATOR_METRICS_ADDRESS=0.0.0.0:9090
USER 10001:10001
# 8080: liveness (/healthz); 9090: metrics.
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "wml_operator"]
