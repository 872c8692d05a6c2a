# The two commands of README.md. Both install what is missing first.
#   make run   local cluster + extension + gateway + embedded Stripe sandbox
#   make test  every test suite
SHELL := /bin/bash
PG_CONFIG := /usr/lib/postgresql/15/bin/pg_config
PGPORT ?= 54315
DB ?= payments
GATEWAY_PORT ?= 8080
# The scale-out cluster's coordinator; its two workers listen on the next two ports.
CITUS_PORT ?= 54340
E2E_DB := payments_e2e
# Where cargo builds (CARGO_TARGET_DIR lets several checkouts share one).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
export PGPORT DB GATEWAY_PORT
# A server started with RUST_BACKTRACE set appends backtraces to error DETAIL.
unexport RUST_BACKTRACE

.PHONY: run test check docs docs-check docs-db setup install install-debug install-releases lint stop unit without-sandbox pgrx-test upgrade-test e2e scale-test reliability fuzz-quick bench bench-smoke

# The debug builds, as `cargo run` would: quicker to build, and the very builds make test uses.
# (make bench builds and measures the release profile.)
run: setup install-debug
	cargo build --package payments-gateway
	@scripts/cluster.sh start
	@scripts/cluster.sh createdb $(DB) --keep
	@GATEWAY_BIN=$(TARGET_DIR)/debug/payments-gateway scripts/run-gateway.sh
	@scripts/run-banner.sh

# Every suite in order, each phase timed (the table at the end says where the time went). The
# Citus suites leave a third of the two cores idle: the single-node suites, the benchmark's smoke
# run and the gateway built without the sandbox go, in that order, while they run.
test:
	@scripts/phases.sh setup lint unit pgrx-test upgrade-test install-debug fuzz-quick docs-check \
		e2e+bench-smoke+without-sandbox,scale-test
	@echo "make test: all suites passed"

# The inner loop, no database: SQL layout, formatting, clippy, unit tests.
check: lint unit without-sandbox

# The book (docs/): its generated reference pages, from a database with the extension and
# the gateway binary, then mdBook into target/book/. docs-check (make test) fails when a
# generated page is stale or the book does not build.
DOCS_DB := payments_docs
DOCS_PAGES = python3 scripts/docs.py "host=127.0.0.1 port=$(PGPORT) user=postgres dbname=$(DOCS_DB)" \
	$(TARGET_DIR)/debug/payments-gateway
docs: setup install-debug docs-db
	$(DOCS_PAGES)
	mdbook build docs
docs-check: docs-db
	$(DOCS_PAGES) --check
	mdbook build docs
docs-db:
	cargo build --package payments-gateway
	@scripts/cluster.sh start
	@scripts/cluster.sh createdb $(DOCS_DB) >/dev/null

# The full benchmark (about 15 minutes; not part of make test). See bench/README.md.
bench: setup install
	cargo build --release --package payments-gateway
	@scripts/cluster.sh start
	@CITUS_PORT=$(CITUS_PORT) scripts/citus.sh start
	python3 bench/bench.py --gateway-bin $(TARGET_DIR)/release/payments-gateway --citus-port $(CITUS_PORT)

# Seconds: proves the benchmark harness still works, against the debug builds.
bench-smoke:
	cargo build --package payments-gateway
	@scripts/cluster.sh start
	@CITUS_PORT=$(CITUS_PORT) scripts/citus.sh start
	python3 bench/bench.py --smoke --out $(CURDIR)/.run/bench-smoke --gateway-bin $(TARGET_DIR)/debug/payments-gateway \
		--citus-port $(CITUS_PORT)

setup:
	@scripts/setup.sh

# `cargo pgrx install` writes the current version's install script; install-releases
# generates the upgrade script to it from the previous release (sql/delta/ and every
# replaceable statement of that install script, scripts/sqltool.py) and adds the
# frozen scripts of released versions (sql/releases/: CREATE EXTENSION … VERSION, and
# the upgrades between them).
install:
	cargo pgrx install --release --pg-config $(PG_CONFIG) --package payments
	@$(MAKE) --no-print-directory install-releases

install-debug:
	cargo pgrx install --pg-config $(PG_CONFIG) --package payments
	@$(MAKE) --no-print-directory install-releases

install-releases:
	@python3 scripts/sqltool.py upgrade "$$($(PG_CONFIG) --sharedir)/extension" $(TARGET_DIR)/sql
	@install -m 644 sql/releases/payments--*.sql $$(find $(TARGET_DIR)/sql -name 'payments--*.sql') \
		"$$($(PG_CONFIG) --sharedir)/extension/"

# The lint gate: SQL state and code apart, dependencies' licenses and sources (deny.toml),
# formatting, and clippy with warnings as errors (the gateway without the sandbox: without-sandbox).
lint:
	python3 scripts/sqltool.py check
	cargo hakari verify
	cargo hakari generate --diff
	cargo deny --log-level error check licenses bans sources
	cargo fmt --all --check
	cargo fmt --manifest-path fuzz/Cargo.toml --check
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --package payments-core --package payments-gateway --package payments-sandbox

# The gateway as production may build it, without the sandbox (--no-default-features): clippy
# with warnings as errors, and its unit tests.
without-sandbox:
	cargo clippy --package payments-gateway --no-default-features --all-targets -- -D warnings
	cargo test --package payments-gateway --no-default-features --lib

pgrx-test:
	@mkdir -p .run && chown postgres .run
	cd payments_ext && cargo pgrx test pg15 --runas postgres --pgdata $(CURDIR)/.run/pgrx-test

# 0.1.0 + data -> ALTER EXTENSION UPDATE == a fresh install, data intact, and
# the #[pg_test] suite passes on it; needs the pg_test build (reinstalled
# without it by install-debug afterwards).
upgrade-test:
	cargo pgrx install --test --pg-config $(PG_CONFIG) --package payments --features pg_test
	@$(MAKE) --no-print-directory install-releases
	@scripts/cluster.sh start
	@scripts/cluster.sh createdb $(E2E_DB)
	PAYMENTS_TEST_DATABASE_URL="host=127.0.0.1 port=$(PGPORT) user=postgres dbname=$(E2E_DB)" \
		cargo test --package payments-e2e --test e2e -- --ignored --test-threads=1 upgrade::

# The reliability table: cargo fuzz's rows (.run/fuzz.tsv) and the end-to-end
# cases' (.run/reliability.tsv), printed even when a case failed.
fuzz-quick:
	@mkdir -p .run && rm -f .run/fuzz.tsv
	scripts/fuzz.sh 200000 $(CURDIR)/.run/fuzz.tsv

E2E_ENV = PAYMENTS_TEST_DATABASE_URL="host=127.0.0.1 port=$(PGPORT) user=postgres dbname=$(E2E_DB)" \
	PAYMENTS_PYTHON=$(CURDIR)/.run/venv/bin/python \
	PAYMENTS_GATEWAY_BIN=$(TARGET_DIR)/debug/payments-gateway \
	PAYMENTS_RELIABILITY_REPORT=$(CURDIR)/.run/reliability.tsv \
	PAYMENTS_SCREENSHOTS=$(CURDIR)/.run/screenshots

# Every end-to-end suite (a module of the one test binary tests/tests/e2e/), the reliability
# cases in their quick form; the table last. The suites run three at a time, each in a
# database of its own (scripts/e2e.py; logs in .run/e2e/). `make e2e T=<name>` runs only the
# tests whose names contain <name>, in one database.
E2E_SUITES := in_process gateway reliability dashboard foundation webhooks mcp
e2e:
	cargo build --package payments-gateway
	@scripts/cluster.sh start
	@rm -f .run/reliability.tsv
	@$(E2E_ENV) python3 scripts/e2e.py $(if $(T),--filter $(T)) $(E2E_SUITES); status=$$?; \
		scripts/reliability-table.sh .run/fuzz.tsv .run/reliability.tsv && exit $$status

# The end-to-end suites again, on a 3-node Citus cluster (coordinator and two
# workers on loopback; Citus built from ../shared/citus/ if missing) after
# payments.distribute(), plus the checks only a cluster can answer. Skipped there,
# as Citus cannot change them: the parser loop (no database), the kill test (it runs
# its own single-node cluster), and the gateway's own behaviour (startup flags,
# health and metrics, its pool's back-pressure, the sandbox under Stripe's SDK).
# One suite at a time, in one database: the three nodes share this machine's two
# cores, and suites side by side took longer (177 s against 136 s).
SCALE_DB := payments_scale
SCALE_ENV = PAYMENTS_TEST_DATABASE_URL="host=127.0.0.1 port=$(CITUS_PORT) user=postgres dbname=$(SCALE_DB)" \
	PAYMENTS_PYTHON=$(CURDIR)/.run/venv/bin/python \
	PAYMENTS_GATEWAY_BIN=$(TARGET_DIR)/debug/payments-gateway \
	PAYMENTS_RELIABILITY_REPORT=$(CURDIR)/.run/scale-reliability.tsv
SCALE_SUITES ?= in_process gateway reliability dashboard foundation webhooks mcp
SCALE_SKIP := parsers_take_any_input postgres_killed_under_load serve_refuses_to_start \
	health_metrics_and_a_complete_openapi an_exhausted_pool_answers_503 the_official_stripe_python_sdk
scale-test:
	cargo build --package payments-gateway
	@CITUS_PORT=$(CITUS_PORT) scripts/citus.sh start
	@CITUS_PORT=$(CITUS_PORT) scripts/citus.sh createdb $(SCALE_DB) >/dev/null
	$(SCALE_ENV) cargo test --package payments-e2e --test e2e -- --ignored --test-threads=1 scale_out::
	$(SCALE_ENV) cargo test --package payments-e2e --test e2e -- --test-threads=1 $(addsuffix ::,$(SCALE_SUITES)) \
		$(addprefix --skip ,$(SCALE_SKIP))

# The long form (about 15 minutes): 10 million runs per fuzz target, more kills, keys, payments.
reliability: setup install-debug
	@mkdir -p .run && rm -f .run/fuzz.tsv .run/reliability.tsv
	scripts/fuzz.sh 10000000 $(CURDIR)/.run/fuzz.tsv
	cargo build --package payments-gateway
	@scripts/cluster.sh start
	@scripts/cluster.sh createdb $(E2E_DB)
	@RELIABILITY=long $(E2E_ENV) cargo test --package payments-e2e --test e2e -- --test-threads=1 reliability:: \
		webhooks:: in_process::; status=$$?; \
		scripts/reliability-table.sh .run/fuzz.tsv .run/reliability.tsv && exit $$status

stop:
	@if [ -s .run/gateway.pid ]; then kill $$(cat .run/gateway.pid) 2>/dev/null || true; rm -f .run/gateway.pid; fi
	@scripts/cluster.sh stop
	@scripts/citus.sh stop
