# The spinewatch image: one image for every service.
#
#   docker build -t spinewatch:0.1.0 .
#   docker run spinewatch:0.1.0                   -> spinewatch worker (the CMD)
#   docker run -e SPINEWATCH_ROLE=alerting spinewatch:0.1.0 alerting
#   docker run -e SPINEWATCH_ROLE=gateway  spinewatch:0.1.0 gateway
#
# Two stages: the builder makes a wheel of spinewatch and installs it with
# the RocksDB extra into a virtualenv; the final stage copies that venv
# only. Every dependency installs from a binary wheel (--only-binary, so a
# release without a cp311 manylinux wheel fails the build instead of pulling
# in a compiler; checked with `pip install --dry-run --only-binary=:all:
# --platform manylinux_2_17_x86_64 ...` on 2026-12-07), so neither stage
# installs build tools. tests/test_deploy.py runs hadolint on this file.
#
# Base image pinned by digest (tag kept for humans). The digest was seen in
# public material: two Dockerfiles pinning this tag to it, and a project's
# notes recording it as what `FROM python:3.11-slim-bookworm` resolved to;
# it could not be pulled from here (no registry access). Update tag and
# digest together: `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:528257d48c1da0dcecc2e725d1ae34498d60c965f1241e39cd6a85a8859bdf84

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# hatchling reads the version from services/spinewatch/__init__.py and the
# readme from README.md; nothing else of the repository goes in
# (.dockerignore keeps tests, deploy and local state out of the context).
COPY pyproject.toml README.md ./
COPY services ./services
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/spinewatch \
    && /opt/spinewatch/bin/pip install --only-binary=:all: "$(ls /wheels/spinewatch-*.whl)[rocksdb]"

FROM ${PYTHON_IMAGE}
# A numeric UID/GID, so Kubernetes' runAsNonRoot can verify it without
# reading /etc/passwd. Its home is the worker's data directory (RocksDB
# state and the chart-design cache), a volume in every deployment.
RUN groupadd --system --gid 10001 spinewatch \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/spinewatch --shell /usr/sbin/nologin spinewatch \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/spinewatch
COPY --from=builder /opt/spinewatch /opt/spinewatch
# Inside a container each service listens on every interface (the defaults,
# 127.0.0.1, suit a host where they run side by side); each service reads
# only its own prefix, so the three bind settings coexist. SPINEWATCH_ROLE
# names the service this container runs, for the HEALTHCHECK below: set it
# with the command (compose and the Kubernetes manifests do). The worker's
# settings know it as someone else's variable (engine/settings.py).
ENV PATH=/opt/spinewatch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    SPINEWATCH_ROLE=worker \
    SPINEWATCH_DATA_DIR=/var/lib/spinewatch \
    SPINEWATCH_METRICS_HOST=0.0.0.0 \
    SPINEWATCH_ALERTING_HTTP_HOST=0.0.0.0 \
    SPINEWATCH_GATEWAY_HOST=0.0.0.0
WORKDIR /var/lib/spinewatch
USER 10001:10001
# worker /metrics /healthz /readyz; alerting HTTP API; gateway HTTP API.
EXPOSE 9464 9465 8080
# `spinewatch <role> --check` asks the running service's /healthz and exits
# 0 on 200. One image runs three services and a HEALTHCHECK cannot see the
# command, so the role comes from SPINEWATCH_ROLE (default: the CMD's worker).
# start-period: a worker imports SciPy and designs its charts before it
# serves /healthz (the issue measured 15-33 s to ready).
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["/bin/sh", "-c", "exec spinewatch \"$SPINEWATCH_ROLE\" --check"]
ENTRYPOINT ["spinewatch"]
CMD ["worker"]
