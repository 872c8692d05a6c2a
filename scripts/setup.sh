#!/usr/bin/env bash
# Installs every system package and cargo tool the project needs on a fresh
# Debian 12 machine. Idempotent: a second run only checks and returns.
set -euo pipefail

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGRX_VERSION=0.18.1
# chromium: the dashboard's browser test drives Debian's Chromium with Playwright.
APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo pkg-config curl wrk chromium)

"$(dirname "$0")/apt-ensure.sh" "${APT_PACKAGES[@]}"

# rust-toolchain.toml pins the Rust release; rustup reads it at every cargo call, so it comes
# before any. A machine without network carries that release as `stable`: give it the pinned
# name (a link) rather than let rustup try to download it.
RUST_CHANNEL=$(sed -n 's/^channel = "\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
RUST_HOST=$(rustc +stable -vV | sed -n 's/^host: //p')
RUST_TOOLCHAINS="${RUSTUP_HOME:-$HOME/.rustup}/toolchains"
if [[ ! -e "$RUST_TOOLCHAINS/$RUST_CHANNEL-$RUST_HOST" ]]; then
  if [[ "$(rustc +stable --version)" == "rustc $RUST_CHANNEL "* ]]; then
    echo "setup: naming the installed stable Rust $RUST_CHANNEL"
    ln -s "$RUST_TOOLCHAINS/stable-$RUST_HOST" "$RUST_TOOLCHAINS/$RUST_CHANNEL-$RUST_HOST"
  else
    rustup toolchain install "$RUST_CHANNEL" --profile minimal --component clippy,rustfmt
  fi
fi

if [[ "$(cargo pgrx --version 2>/dev/null)" != "cargo-pgrx $PGRX_VERSION" ]]; then
  echo "setup: installing cargo-pgrx $PGRX_VERSION (takes a few minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

# cargo fuzz runs the libFuzzer targets in fuzz/ (make test: a bounded run).
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz 0.13.2" ]]; then
  echo "setup: installing cargo-fuzz 0.13.2"
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

# cargo deny checks the dependencies' licenses and sources (make lint; deny.toml).
if [[ "$(cargo deny --version 2>/dev/null)" != "cargo-deny 0.20.2" ]]; then
  echo "setup: installing cargo-deny 0.20.2"
  cargo install cargo-deny --version 0.20.2 --locked
fi

# cargo hakari keeps workspace-hack/ current (make lint): one feature set per shared dependency,
# so the builds of make run, the unit tests and the end-to-end tests reuse each other's.
if [[ "$(cargo hakari --version 2>/dev/null)" != "cargo-hakari 0.9.39" ]]; then
  echo "setup: installing cargo-hakari 0.9.39"
  cargo install cargo-hakari --version 0.9.39 --locked
fi

# mdBook builds the user's manual in docs/ (make docs; make test checks it builds).
if [[ "$(mdbook --version 2>/dev/null)" != "mdbook v0.5.4" ]]; then
  echo "setup: installing mdbook 0.5.4"
  cargo install mdbook --version 0.5.4 --locked --no-default-features --features search
fi

# Point pgrx at Debian's PostgreSQL 15; it must never download its own.
if ! grep -qs "pg15 = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  cargo pgrx init --pg15 "$PG_CONFIG"
fi

# Python oracles for the tests: the official Stripe and Standard Webhooks packages;
VENV="$(cd "$(dirname "$0")/.." && pwd)/.run/venv"
# schemathesis checks the gateway against its OpenAPI document; the peer service
# make bench measures the gateway against (../shared/peer/seed_fastapi) runs on
# FastAPI, uvicorn, SQLAlchemy and psycopg; Playwright drives the dashboard's
# browser test (with the system Chromium: it never downloads a browser) and the
# official MCP SDK is the client of the MCP test.
if ! "$VENV/bin/python" -c "import stripe, standardwebhooks, schemathesis, fastapi, uvicorn, sqlalchemy, psycopg, \
    playwright, mcp" 2>/dev/null; then
  mkdir -p "$(dirname "$VENV")"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check stripe==16.1.0 standardwebhooks==1.1.0 \
    schemathesis==4.32.5 fastapi==0.165.0 uvicorn==0.55.0 SQLAlchemy==2.1.9 "psycopg[binary]==3.3.9" \
    playwright==1.65.3 mcp==1.30.0
fi
