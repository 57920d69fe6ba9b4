#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for the store's tests (src/store/postgres_tests.rs)
# and prints the line to export:
#
#   STRANGLER_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:55432/postgres
#
# Usage (as root or as a user that can `sudo`):
#   eval "export $(bash .ci/postgres.sh | tail -n1)"
#
# - installs Debian's `postgresql` package when no server binaries are found;
# - creates a cluster in a fresh temporary directory owned by the `postgres`
#   user (PostgreSQL refuses to run as root), trust auth, listening on
#   127.0.0.1 only (no Unix socket in a shared directory);
# - waits until it accepts connections (pg_isready), at most 30 s.
#
# Environment: STRANGLER_PG_PORT (default 55432), STRANGLER_PG_DIR (default a
# new mktemp directory). Stop it with the `pg_ctl … stop` line printed on
# stderr; CI simply lets the machine's cleanup end it.
set -euo pipefail

PORT="${STRANGLER_PG_PORT:-55432}"
log() { printf '[postgres %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

if ! BINDIR="$(find_bindir)"; then
  log "installing PostgreSQL from Debian's packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  BINDIR="$(find_bindir)" || { log "no PostgreSQL server binaries after installing"; exit 1; }
fi
log "using $BINDIR"

# Already running there (a second call, a developer's cluster)? Reuse it.
if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 2; then
  log "a server already accepts connections on 127.0.0.1:$PORT"
  echo "STRANGLER_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
  exit 0
fi

# Run a command as the `postgres` system user (created by the package).
as_postgres() {
  if [ "$(id -un)" = "postgres" ]; then
    "$@"
  elif [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null; then
    runuser -u postgres -- "$@"
  else
    $SUDO -u postgres -- "$@"
  fi
}

if ! id postgres >/dev/null 2>&1; then
  log "creating the postgres system user"
  $SUDO useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

DIR="${STRANGLER_PG_DIR:-$(mktemp -d /tmp/strangler-pg.XXXXXX)}"
mkdir -p "$DIR"
$SUDO chown postgres: "$DIR"
chmod 700 "$DIR"
DATA="$DIR/data"

log "initdb into $DATA"
as_postgres "$BINDIR/initdb" -D "$DATA" -U postgres --auth=trust \
  --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
  || { cat "$DIR/initdb.log" >&2; exit 1; }

# Tests create a database each and run in parallel: allow plenty of
# connections; durability does not matter for a throwaway cluster.
OPTS="-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR"
OPTS+=" -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
log "starting on 127.0.0.1:$PORT"
as_postgres "$BINDIR/pg_ctl" -D "$DATA" -l "$DIR/server.log" -o "$OPTS" -w -t 30 start >/dev/null \
  || { cat "$DIR/server.log" >&2; exit 1; }

for _ in $(seq 1 60); do
  if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 1; then
    log "ready (stop with: runuser -u postgres -- $BINDIR/pg_ctl -D $DATA stop)"
    echo "STRANGLER_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
    exit 0
  fi
  sleep 0.5
done
log "PostgreSQL did not accept connections within 30 s"
cat "$DIR/server.log" >&2
exit 1
