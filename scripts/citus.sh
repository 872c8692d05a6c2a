#!/usr/bin/env bash
# A 3-node Citus cluster on loopback for the scale-out suite: a coordinator and
# two workers, each a data directory under .run/citus/, run as postgres.
#
#   citus.sh install          build and install Citus from ../shared/citus/ unless installed
#   citus.sh start            install if needed; initdb, start the nodes, register the workers
#   citus.sh stop
#   citus.sh createdb NAME [SHARDS]
#                             (re)create NAME on every node with citus and payments, then
#                             run payments.distribute(SHARDS) on the coordinator (default 32)
#
# Ports: CITUS_PORT (coordinator, default 54340), +1 and +2 for the workers.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$BIN/pg_config
CITUS_VERSION=12.1.12
# The source ships beside the repository (../shared/citus/); CITUS_SRC overrides.
CITUS_SRC=${CITUS_SRC:-}
if [ -z "$CITUS_SRC" ]; then
  for dir in "$ROOT/../shared/citus" /work/shared/citus; do
    if [ -f "$dir/citus-12.1.12.tar.gz" ]; then CITUS_SRC=$dir; break; fi
  done
fi
RUN_DIR=$ROOT/.run/citus
PORT=${CITUS_PORT:-54340}
PORTS=("$PORT" "$((PORT + 1))" "$((PORT + 2))")
NAMES=(coordinator worker1 worker2)
BUILD_PACKAGES=(libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libpam0g-dev libselinux1-dev
  libxslt1-dev libreadline-dev autoconf flex bison make gcc)

as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    env -u RUST_BACKTRACE runuser -u postgres -- "$@"
  else
    env -u RUST_BACKTRACE "$@"
  fi
}

psql_on() {
  local port=$1
  shift
  "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"
}

install() {
  local control
  control=$("$PG_CONFIG" --sharedir)/extension/citus.control
  if [ -f "$control" ] && grep -q "default_version = '12.1" "$control"; then
    return
  fi
  "$ROOT/scripts/apt-ensure.sh" "${BUILD_PACKAGES[@]}"
  if [ ! -f "$CITUS_SRC/citus-$CITUS_VERSION.tar.gz" ]; then
    echo "citus: citus-$CITUS_VERSION.tar.gz not found in ../shared/citus/ (set CITUS_SRC to its folder)" >&2
    exit 1
  fi
  echo "citus: building Citus $CITUS_VERSION from $CITUS_SRC (about two minutes)"
  (cd "$CITUS_SRC" && sha256sum -c --quiet SHA256SUMS)
  local build
  build=$(mktemp -d)
  tar xzf "$CITUS_SRC/citus-$CITUS_VERSION.tar.gz" -C "$build"
  (
    cd "$build/citus-$CITUS_VERSION"
    ./configure PG_CONFIG="$PG_CONFIG" >"$build/configure.log" 2>&1
    make -j"$(nproc)" >"$build/make.log" 2>&1
    make install >"$build/install.log" 2>&1
  ) || { echo "citus: build failed; logs in $build" >&2; exit 1; }
  rm -rf "$build"
}

start() {
  install
  mkdir -p "$RUN_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$RUN_DIR" "$ROOT/.run"
  local so
  so=$("$PG_CONFIG" --pkglibdir)/payments.so
  for i in 0 1 2; do
    local dir=$RUN_DIR/${NAMES[$i]}
    if [ ! -f "$dir/PG_VERSION" ]; then
      as_postgres "$BIN/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    fi
    # Written at every start (and read again by a running node), so that a cluster an earlier
    # checkout made gets today's settings too.
    cat >"$dir/cluster.conf" <<EOF
shared_preload_libraries = 'citus'
listen_addresses = '127.0.0.1'
port = ${PORTS[$i]}
unix_socket_directories = '$RUN_DIR'
max_connections = 300
max_prepared_transactions = 200
citus.enable_statistics_collection = off
# The nodes talk over loopback: no TLS between them (Citus asks for it by default, and every
# new connection between nodes paid a handshake), and one connection per node for a query that
# reaches many shards (many short transactions on two cores, where opening more connections
# costs more than it saves). Together they took 30 % off the Citus suites.
citus.node_conninfo = 'sslmode=disable'
citus.max_adaptive_executor_pool_size = 1
EOF
    if ! grep -q "^include 'cluster.conf'" "$dir/postgresql.conf"; then
      echo "include 'cluster.conf'" >>"$dir/postgresql.conf"
    fi
    if as_postgres "$BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
      as_postgres "$BIN/pg_ctl" -D "$dir" reload >/dev/null
      if [ -f "$so" ] && [ "$so" -nt "$dir/postmaster.pid" ]; then
        as_postgres "$BIN/pg_ctl" -D "$dir" -w -m fast restart -l "$dir.log" >/dev/null
      fi
    else
      as_postgres "$BIN/pg_ctl" -D "$dir" -w -l "$dir.log" start >/dev/null
    fi
  done
}

stop() {
  for name in "${NAMES[@]}"; do
    if [ -f "$RUN_DIR/$name/PG_VERSION" ]; then
      as_postgres "$BIN/pg_ctl" -D "$RUN_DIR/$name" -w -m fast stop >/dev/null 2>&1 || true
    fi
  done
}

createdb() {
  local name=$1 shards=${2:-32}
  # Workers first: the coordinator's CREATE EXTENSION payments reaches registered workers itself.
  for port in "${PORTS[2]}" "${PORTS[1]}" "${PORTS[0]}"; do
    psql_on "$port" -d postgres -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" -c "CREATE DATABASE \"$name\""
    psql_on "$port" -d "$name" -c "SET client_min_messages = warning" -c "CREATE EXTENSION citus"
  done
  psql_on "${PORTS[0]}" -d "$name" -c "SET client_min_messages = warning" \
    -c "SELECT citus_set_coordinator_host('127.0.0.1', ${PORTS[0]})" \
    -c "SELECT citus_add_node('127.0.0.1', ${PORTS[1]})" \
    -c "SELECT citus_add_node('127.0.0.1', ${PORTS[2]})" \
    -c "CREATE EXTENSION payments" \
    -c "SELECT payments.distribute($shards)"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  createdb) createdb "$2" "${3:-}" ;;
  *) echo "usage: $0 install|start|stop|createdb NAME [SHARDS]" >&2; exit 2 ;;
esac
