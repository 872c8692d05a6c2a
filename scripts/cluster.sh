#!/usr/bin/env bash
# The project's local PostgreSQL 15 cluster: a data directory under .run/,
# listening on 127.0.0.1 only, run as the postgres user (the server refuses root).
#
#   cluster.sh start            initdb if needed; start, or restart if the installed extension is newer
#   cluster.sh stop
#   cluster.sh createdb NAME    (re)create database NAME with the extension; --keep keeps an
#                               existing one and upgrades its extension (ALTER EXTENSION UPDATE)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=/usr/lib/postgresql/15/bin
RUN_DIR=$ROOT/.run
PGDATA=$RUN_DIR/pgdata
PGPORT=${PGPORT:-54315}
LOG=$RUN_DIR/postgres.log
MAX_CONNECTIONS=400

as_postgres() {
  # The machine exports RUST_BACKTRACE=1; a server started with it appends
  # Rust backtraces to error DETAIL.
  if [ "$(id -u)" = 0 ]; then
    env -u RUST_BACKTRACE runuser -u postgres -- "$@"
  else
    env -u RUST_BACKTRACE "$@"
  fi
}

psql_cmd() { "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres "$@"; }

start() {
  mkdir -p "$RUN_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$RUN_DIR"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    as_postgres "$BIN/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  fi
  local so
  so=$("$BIN/pg_config" --pkglibdir)/payments.so
  if as_postgres "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    # A rebuilt extension library is only safe to load in fresh server processes.
    if [ -f "$so" ] && [ "$so" -nt "$PGDATA/postmaster.pid" ]; then
      as_postgres "$BIN/pg_ctl" -D "$PGDATA" -w -m fast restart -l "$LOG" >/dev/null
    fi
  else
    as_postgres "$BIN/pg_ctl" -D "$PGDATA" -w -l "$LOG" \
      -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $RUN_DIR" start >/dev/null
  fi
  # The end-to-end suites run side by side, and some open 64 connections at once.
  if [ "$(psql_cmd -d postgres -tAc "SHOW max_connections")" != "$MAX_CONNECTIONS" ]; then
    psql_cmd -d postgres -c "ALTER SYSTEM SET max_connections = $MAX_CONNECTIONS"
    as_postgres "$BIN/pg_ctl" -D "$PGDATA" -w -m fast restart -l "$LOG" >/dev/null
  fi
}

stop() {
  if [ -f "$PGDATA/PG_VERSION" ]; then
    as_postgres "$BIN/pg_ctl" -D "$PGDATA" -w -m fast stop >/dev/null 2>&1 || true
  fi
}

createdb() {
  local name=$1 keep=${2:-}
  if [ "$keep" != "--keep" ]; then
    psql_cmd -d postgres -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)"
  fi
  if [ -z "$(psql_cmd -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
    psql_cmd -d postgres -c "CREATE DATABASE \"$name\""
  fi
  # A kept database is upgraded in place, its payments with it.
  local before after
  before=$(psql_cmd -d "$name" -tAc "SELECT extversion FROM pg_extension WHERE extname = 'payments'")
  if ! psql_cmd -d "$name" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS payments" \
    -c "ALTER EXTENSION payments UPDATE"; then
    # Released versions upgrade (make upgrade-test proves it); a database made by a build of a
    # version still in development may hold SQL its release never had.
    echo "cluster: database $name (payments $before) could not be upgraded: it was probably made by a" >&2
    echo "         development build of $before, before that version was released. Its data is kept." >&2
    echo "         Recreate it with: scripts/cluster.sh createdb $name   (this drops it)" >&2
    exit 1
  fi
  after=$(psql_cmd -d "$name" -tAc "SELECT extversion FROM pg_extension WHERE extname = 'payments'")
  if [ -n "$before" ] && [ "$before" != "$after" ]; then
    echo "cluster: upgraded the payments extension in database $name from $before to $after"
  fi
  # Within one unreleased version ALTER EXTENSION UPDATE has nothing to do, so
  # say when the database was made by another build of the same version.
  local marker=$RUN_DIR/$name.extension-sha256 sha
  sha=$(cat "$("$BIN/pg_config" --sharedir)/extension/payments--$after.sql" "$ROOT"/sql/releases/*.sql | sha256sum | cut -d' ' -f1)
  if [ "$before" = "$after" ] && [ -f "$marker" ] && [ "$(cat "$marker")" != "$sha" ]; then
    echo "cluster: database $name has version $after from an earlier build whose SQL differs from the installed one;" >&2
    echo "         its data is kept. Recreate it (scripts/cluster.sh createdb $name drops it) to see the new SQL." >&2
  else
    echo "$sha" > "$marker"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  createdb) createdb "$2" "${3:-}" ;;
  *) echo "usage: $0 start|stop|createdb NAME [--keep]" >&2; exit 2 ;;
esac
