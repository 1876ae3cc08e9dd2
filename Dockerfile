# imis-bridge: `bridge serve --config /config` as a non-root user on a read-only root
# filesystem (deploy/compose.yaml runs it so; deploy/README.md).
#
# Mount the configuration at /config (read-only is fine) and a volume at /data. At run
# time the bridge writes only to
#   /data  keys_dir (BRIDGE_KEYS_DIR below) and a SQLite database if you use one
#          (database_url = "sqlite:////data/bridge.db"; PostgreSQL for several instances);
#   /tmp   a tmpfs: with --workers N, prometheus_client's multiprocess files.
# Python writes no bytecode (compiled here, at build time), HOME does not exist, and
# the image has no pip, setuptools or compiler. tests/deploy/test_dockerfile.py runs
# `bridge serve` with this ENV on a read-only root.

# --- build: a virtual environment with the bridge and its dependencies -------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN python -m venv /opt/bridge \
 && /opt/bridge/bin/pip install '.[postgres]' \
 && /opt/bridge/bin/pip uninstall --yes pip setuptools wheel \
 && python -m compileall -q /opt/bridge/lib

# --- run ---------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
# The base image ships its standard library without bytecode and with pip: compile the
# one (a read-only root cannot cache it later) and remove the other.
RUN python -m pip uninstall --yes pip setuptools wheel \
 && python -m compileall -q /usr/local/lib/python3.11 \
 && groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin bridge \
 && mkdir -p /data /config \
 && chown 10001:10001 /data \
 && chmod 0700 /data
COPY --from=build /opt/bridge /opt/bridge

ENV PATH=/opt/bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/nonexistent \
    TMPDIR=/tmp \
    BRIDGE_KEYS_DIR=/data/keys

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
CMD ["bridge", "serve", "--config", "/config", "--host", "0.0.0.0", "--port", "8000"]
