# syntax=docker/dockerfile:1
#
# authz: Envoy ext_authz v3 server. gRPC on 9191, HTTP (/healthz, /readyz,
# /metrics, /.well-known/jwks.json) on 8181.
#
#   docker build -t authz:0.1.0 .
#   docker run --rm -p 9191:9191 -p 8181:8181 \
#     -v "$PWD/examples:/etc/authz/policy:ro" authz:0.1.0
#
# The policy is read from /etc/authz/policy/policy.yaml; mount a directory
# there (Kubernetes: deploy/kubernetes). Runs as UID/GID 10001 and works with a
# read-only root filesystem.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the package and its dependencies into a venv -------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/authz
ENV PATH=/opt/authz/bin:$PATH

WORKDIR /src
# Every dependency, and grpcio-tools (the build requirement that compiles the
# vendored Envoy .proto files into authz._proto, see protos/README.md), ships
# binary wheels for CPython 3.11 on linux/amd64 and linux/arm64, so no compiler
# is installed; add build-essential here if yours has to build one from source.
COPY pyproject.toml setup.py README.md ./
COPY protos/vendor ./protos/vendor
COPY authz ./authz
# pip byte-compiles while installing, so nothing is written at run time.
RUN pip install --no-cache-dir .

# --- runtime ------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="authz" \
      org.opencontainers.image.description="Envoy external-authorization (ext_authz v3 gRPC) server: JWT/OIDC, API keys, SPIFFE peers, RBAC and CEL" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 authz \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin authz \
 && mkdir -p /etc/authz/policy /etc/authz/keys

COPY --from=build /opt/authz /opt/authz

ENV PATH=/opt/authz/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /

EXPOSE 9191 8181

# For plain Docker; Kubernetes uses the probes in deploy/kubernetes instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8181/healthz', timeout=2).status == 200 else 1)"]

# SIGTERM (the default stop signal): /readyz turns 503, in-flight checks
# finish, exit 0.
ENTRYPOINT ["authz"]
CMD ["serve", "--config", "/etc/authz/policy/policy.yaml"]
