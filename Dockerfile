# One image for rtdash's own processes (order service, payment provider, demo shop, gateway,
# orders job, push server).
# Build context: the project root. `make jars` must have filled .jars/spark first.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rtdash rtdash
COPY jobs jobs
COPY producers producers
COPY push_server push_server
COPY stack stack
COPY .jars/spark .jars/spark
RUN pip install --no-cache-dir .
ENV RTDASH_HOME=/data RTDASH_BIND_HOST=0.0.0.0 RTDASH_JARS_DIR=/app/.jars
