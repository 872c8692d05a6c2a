# The two commands of README.md. Both install what is missing first.
#   make run   local cluster + extension + gateway + embedded Stripe sandbox
#   make test  every test suite
SHELL := /bin/bash
PG_CONFIG := /usr/lib/postgresql/15/bin/pg_config
PGPORT ?= 54315
DB ?= payments
GATEWAY_PORT ?= 8080
E2E_DB := payments_e2e
# Where cargo builds (CARGO_TARGET_DIR lets several checkouts share one).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
export PGPORT DB GATEWAY_PORT
# A server started with RUST_BACKTRACE set appends backtraces to error DETAIL.
unexport RUST_BACKTRACE

.PHONY: run test setup install install-debug db stop unit pgrx-test e2e bench bench-smoke

run: setup install
	cargo build --release --package payments-gateway
	@scripts/cluster.sh start
	@scripts/cluster.sh createdb $(DB) --keep
	@GATEWAY_BIN=$(TARGET_DIR)/release/payments-gateway scripts/run-gateway.sh
	@scripts/run-banner.sh

test: setup unit pgrx-test install-debug e2e bench-smoke
	@echo "make test: all suites passed"

# The full benchmark (about 15 minutes; not part of make test). See bench/README.md.
bench: setup install
	cargo build --release --package payments-gateway
	@scripts/cluster.sh start
	python3 bench/bench.py --gateway-bin $(TARGET_DIR)/release/payments-gateway

# Seconds: proves the benchmark harness still works, against the debug builds.
bench-smoke:
	cargo build --package payments-gateway
	@scripts/cluster.sh start
	python3 bench/bench.py --smoke --out $(CURDIR)/.run/bench-smoke --gateway-bin $(TARGET_DIR)/debug/payments-gateway

setup:
	@scripts/setup.sh

install:
	cargo pgrx install --release --pg-config $(PG_CONFIG) --package payments

install-debug:
	cargo pgrx install --pg-config $(PG_CONFIG) --package payments

unit:
	cargo test --package payments-core --package payments-gateway

pgrx-test:
	@mkdir -p .run && chown postgres .run
	cd payments_ext && cargo pgrx test pg15 --runas postgres --pgdata $(CURDIR)/.run/pgrx-test

e2e:
	cargo build --package payments-gateway
	@scripts/cluster.sh start
	@scripts/cluster.sh createdb $(E2E_DB)
	PAYMENTS_TEST_DATABASE_URL="host=127.0.0.1 port=$(PGPORT) user=postgres dbname=$(E2E_DB)" \
	PAYMENTS_PYTHON=$(CURDIR)/.run/venv/bin/python \
	PAYMENTS_GATEWAY_BIN=$(TARGET_DIR)/debug/payments-gateway \
		cargo test --package payments-e2e -- --test-threads=1

stop:
	@if [ -s .run/gateway.pid ]; then kill $$(cat .run/gateway.pid) 2>/dev/null || true; rm -f .run/gateway.pid; fi
	@scripts/cluster.sh stop
