# The two commands of README.md. Both install what is missing first.
#   make run   local cluster + extension (+ gateway and sandbox once they exist)
#   make test  every test suite
SHELL := /bin/bash
PG_CONFIG := /usr/lib/postgresql/15/bin/pg_config
PGPORT ?= 54315
DB ?= payments
E2E_DB := payments_e2e
export PGPORT
# A server started with RUST_BACKTRACE set appends backtraces to error DETAIL.
unexport RUST_BACKTRACE

.PHONY: run test setup install install-debug db stop unit pgrx-test e2e

run: setup install
	@scripts/cluster.sh start
	@scripts/cluster.sh createdb $(DB) --keep
	@scripts/run-banner.sh

test: setup unit pgrx-test install-debug e2e
	@echo "make test: all suites passed"

setup:
	@scripts/setup.sh

install:
	cargo pgrx install --release --pg-config $(PG_CONFIG) --package payments

install-debug:
	cargo pgrx install --pg-config $(PG_CONFIG) --package payments

unit:
	cargo test --package payments-core

pgrx-test:
	@mkdir -p .run && chown postgres .run
	cd payments_ext && cargo pgrx test pg15 --runas postgres --pgdata $(CURDIR)/.run/pgrx-test

e2e:
	@scripts/cluster.sh start
	@scripts/cluster.sh createdb $(E2E_DB)
	PAYMENTS_TEST_DATABASE_URL="host=127.0.0.1 port=$(PGPORT) user=postgres dbname=$(E2E_DB)" \
	PAYMENTS_PYTHON=$(CURDIR)/.run/venv/bin/python \
		cargo test --package payments-e2e -- --test-threads=1

stop:
	@scripts/cluster.sh stop
