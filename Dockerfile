# imis-bridge: `bridge serve --config /config` as a non-root user.
# Mount the configuration at /config and a volume at /data (keys, SQLite).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install '.[postgres]' \
 && useradd --system --uid 10001 --home /data bridge \
 && mkdir -p /data /config \
 && chown bridge /data

USER bridge
VOLUME ["/data"]
# Point keys_dir and a SQLite database_url at /data, e.g.
#   keys_dir = "/data/keys"   database_url = "sqlite:////data/bridge.db"
ENV BRIDGE_KEYS_DIR=/data/keys
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
CMD ["bridge", "serve", "--config", "/config", "--host", "0.0.0.0", "--port", "8000"]
