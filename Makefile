# rtdash: `make demo` runs the whole local stack with simulated payments,
# `make test` runs the test suite. Both install what they need first
# (virtual environment, JVM jars, Debian packages); re-running is fast.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RTDASH := $(VENV)/bin/rtdash
STAMP := $(VENV)/.installed-stamp
JARS_STAMP := .jars/.stamp
SYSTEM_STAMP := .jars/.system-stamp
# The dashboard's chart library (package.json, package-lock.json): npm ci into node_modules/, the files the page
# loads copied into push_server/static/vendor/ (git-ignored, packaged with push_server, served from its origin).
VENDOR := push_server/static/vendor
UPLOT := node_modules/uplot/dist
VENDOR_FILES := $(VENDOR)/uPlot.iife.min.js $(VENDOR)/uPlot.min.css $(VENDOR)/LICENSE
MVN := mvn -q -B -f jars/pom.xml dependency:copy-dependencies -DincludeScope=runtime

.PHONY: setup demo up down status test test-fast bench clean

setup: $(VENDOR_FILES) $(STAMP) $(JARS_STAMP) $(SYSTEM_STAMP)

# Python: the package with its pinned dependencies and the test extras.
$(STAMP): pyproject.toml
	@echo "==> python environment ($(VENV))"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install --progress-bar on -e '.[test]'
	@touch $@

# Browser: uPlot from the npm registry, exactly as package-lock.json pins it (no audit or funding requests).
$(VENDOR_FILES) &: package.json package-lock.json
	@echo "==> dashboard chart library (npm ci -> $(VENDOR))"
	@command -v npm >/dev/null || { echo "npm is needed to install the dashboard's chart library (Debian: apt-get install npm)"; exit 1; }
	@npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p $(VENDOR)
	@cp $(UPLOT)/uPlot.iife.min.js $(UPLOT)/uPlot.min.css $(VENDOR)/
	@cp node_modules/uplot/LICENSE $(VENDOR)/LICENSE
	@touch $(VENDOR_FILES)

# JVM: the Kafka broker and Spark's Kafka connector, from Maven Central (cached in ~/.m2).
$(JARS_STAMP): jars/pom.xml
	@echo "==> JVM jars (.jars/kafka, .jars/spark)"
	@rm -rf .jars/kafka .jars/spark
	@$(MVN) -Pkafka -DoutputDirectory=$(CURDIR)/.jars/kafka
	@$(MVN) -Pspark -DoutputDirectory=$(CURDIR)/.jars/spark
	@touch $@

# Debian: redis-server, and Chromium for the dashboard's browser test.
$(SYSTEM_STAMP): scripts/install-system-packages.sh
	@echo "==> system packages"
	@bash scripts/install-system-packages.sh
	@mkdir -p .jars && touch $@

demo: setup
	$(RTDASH) demo

up: setup
	$(RTDASH) up

down:
	@test -x $(RTDASH) && $(RTDASH) down || echo "nothing to stop"

status:
	$(RTDASH) status

test: setup
	$(PY) -m pytest -ra

# Unit tests only (no Kafka, Redis or Spark started).
test-fast: setup
	$(PY) -m pytest -ra -m "not integration"

bench: setup
	$(PY) -m bench.notify_throughput
	$(PY) -m bench.e2e_latency
	$(PY) -m bench.gateway_overhead
	$(PY) -m bench.traffic_throughput
	$(PY) -m bench.traffic_freshness

clean: down
	rm -rf .rtdash
