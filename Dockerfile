# One image for rtdash's own processes (order service, payment provider, demo shop, gateway,
# orders job, push server).
# Build context: the project root. `make jars` must have filled .jars/spark first.

# The dashboard's chart library from the npm registry, as package-lock.json pins it.
FROM node:20-bookworm-slim AS dashboard-assets
WORKDIR /assets
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rtdash rtdash
COPY jobs jobs
COPY producers producers
COPY push_server push_server
# Served by the push server from its own origin (push_server/static/vendor/, packaged as package data).
COPY --from=dashboard-assets /assets/node_modules/uplot/dist/uPlot.iife.min.js \
     /assets/node_modules/uplot/dist/uPlot.min.css /assets/node_modules/uplot/LICENSE push_server/static/vendor/
COPY stack stack
COPY .jars/spark .jars/spark
RUN pip install --no-cache-dir .
ENV RTDASH_HOME=/data RTDASH_BIND_HOST=0.0.0.0 RTDASH_JARS_DIR=/app/.jars
