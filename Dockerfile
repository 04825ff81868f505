# banking-es: the API server. Build: docker build -t banking-es .
# Run with PostgreSQL, Redis and Redpanda: docker compose up (see docker-compose.yml).
# Runtime dependencies only (requirements.lock): no test or lint tools in the image.

# Build stage: uv fills a virtualenv, which is all the final image takes from here.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir uv==0.13.9 && python -m venv --without-pip /opt/venv
# Exactly the versions CI tested (requirements.lock), then the project itself.
COPY pyproject.toml requirements.lock README.md /src/
RUN uv pip sync --python /opt/venv/bin/python --no-cache --compile-bytecode /src/requirements.lock
COPY src /src/src
RUN uv pip install --python /opt/venv/bin/python --no-cache --compile-bytecode --no-deps /src

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=build /opt/venv /opt/venv
# DejaVu Sans: statements in PDF print owner names in Greek, Cyrillic, ... (statements/pdf.py).
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
# A numeric user: Kubernetes' runAsNonRoot can only verify a numeric one (deploy/k8s).
RUN groupadd --system --gid 10001 banking \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/banking banking \
 && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
WORKDIR /home/banking
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
# On Kubernetes a Job migrates and the pods run `serve --no-migrate` (deploy/k8s).
CMD ["banking-es", "serve"]
