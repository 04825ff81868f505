# banking-es: the API server. Build: docker build -t banking-es .
# Run with PostgreSQL, Redis and Redpanda: docker compose up (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Exactly the versions CI tested (requirements.lock), then the project itself.
COPY pyproject.toml requirements.lock README.md ./
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip sync --system --no-cache --compile-bytecode requirements.lock
COPY src ./src
RUN uv pip install --system --no-cache --compile-bytecode --no-deps . \
 && useradd --system --create-home --home-dir /home/banking banking \
 && mkdir -p /data && chown banking /data

USER banking
ENV HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/data \
    BANKING_ENV=production \
    LOG_FORMAT=json
EXPOSE 3000
VOLUME ["/data"]

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/health/live', timeout=2).status != 200)"

# `serve` migrates the database (under a lock), prepares the metrics directory shared by
# the workers (PROMETHEUS_MULTIPROC_DIR, default /data/prometheus-multiproc), then forks.
CMD ["banking-es", "serve"]
