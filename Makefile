# hookrelay: the commands a newcomer needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
# `make run` uses this admin token if set, else makes one up and prints it.
HOOKRELAY_ADMIN_TOKEN ?=

.PHONY: help run test test-fast lint audit bench services fmt test-tools check-deploy

help:
	@echo "make run    run hookrelay serve against the local PostgreSQL and RabbitMQ"
	@echo "make test   the whole test suite (needs PostgreSQL and RabbitMQ)"
	@echo "make test-fast  the suite without the slow fault and scale tests (slow_*)"
	@echo "make lint   cargo fmt --check and clippy -D warnings"
	@echo "make audit  cargo deny: advisories, licenses, banned crates, sources"
	@echo "make check-deploy  the deploy files checked by promtool, hadolint, kubernetes-validate, systemd-analyze"
	@echo "make bench  throughput, latency and memory figures (release build; takes minutes)"

services:
	@scripts/check-services.sh

# Local development: private network targets are allowed so that a receiver on this machine
# can be used, and an admin token is printed for the curl tour in the README.
run: services
	@$(CARGO) build -p hookrelay
	@token="$(HOOKRELAY_ADMIN_TOKEN)"; \
	if [ -z "$$token" ]; then token="dev_$$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"; fi; \
	listen="$${HOOKRELAY_LISTEN:-127.0.0.1:8080}"; \
	echo ""; \
	echo "  hookrelay on http://$$listen  (stop with Ctrl-C)"; \
	echo "  admin token:  $$token"; \
	echo "  try:          curl -H 'Authorization: Bearer $$token' http://$$listen/v1/event-types"; \
	echo "  the binary:   target/debug/hookrelay (--help; publish --type T --account A --data JSON)"; \
	echo ""; \
	HOOKRELAY_ADMIN_TOKEN="$$token" \
	HOOKRELAY_ALLOW_PRIVATE_NETWORKS="$${HOOKRELAY_ALLOW_PRIVATE_NETWORKS:-true}" \
	exec target/debug/hookrelay serve

# The tests and checks run with the project's Python environment first on PATH, so that the
# `python3` and `schemathesis` they start are the ones scripts/test-tools.sh installed there.
test test-fast test-tools check-deploy audit: export PATH := $(CURDIR)/.venv/bin:$(PATH)

test: services test-tools
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

# The fault and scale tests (named slow_*) start broker nodes, clusters and database servers
# of their own and take minutes; skip them while iterating. CI runs everything.
test-fast: services test-tools
	$(CARGO) nextest run --workspace --no-fail-fast -E 'not test(/slow_/)'

# Chromium and Prometheus (Debian packages, system-wide), the Python tools (into .venv) and
# the Node example's libraries (its node_modules), installed when missing.
test-tools:
	@scripts/test-tools.sh

# Every deploy artefact checked by its own tool (promtool, hadolint, kubernetes-validate,
# systemd-analyze, Grafana's schema); see deploy/README.md.
check-deploy:
	@# systemd-analyze only needs the binary to exist: the test build's will do.
	@[ -x target/debug/hookrelay ] || $(CARGO) build -p hookrelay
	@scripts/check-deploy.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

audit:
	@scripts/audit.sh

fmt:
	$(CARGO) fmt --all

# Figures, not a test: a release build of the service, measured as a separate process.
bench: services
	$(CARGO) build --release -p hookrelay -p hookrelay-bench
	target/release/hookrelay-bench $(BENCH_ARGS)
