#!/usr/bin/env bash
# A private PostgreSQL cluster (Debian's `postgresql` package) for tests and developers: initdb in a
# directory of its own, listening on a free loopback port only, trust auth for a `rhinobox` role.
#
#   scripts/postgres.sh start DIR   initdb (first time), start, create the database, print settings
#   scripts/postgres.sh stop DIR    stop the cluster (fast shutdown)
#
# `start` prints a RHINOBOX_CATALOG=postgresql://... line (also written to DIR/env).
# PG_FAST=1 turns fsync off: for throwaway test clusters only, never for data you want to keep.
# As root the server runs as the `postgres` user (initdb refuses root); DIR is handed to that user.
set -euo pipefail

ROLE=rhinobox
DATABASE=rhinobox
START_TIMEOUT_S=30

usage() {
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 2
}

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $dir ]] || { echo "postgres.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
    echo "$dir"
}

as_owner() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local bin port fast_opts=""
    bin=$(pg_bin)
    mkdir -p "$DIR"
    if [[ $(id -u) == 0 ]]; then
        chmod 755 "$DIR"
        chown postgres: "$DIR"
    fi
    if [[ ! -s "$DIR/data/PG_VERSION" ]]; then
        as_owner "$bin/initdb" -D "$DIR/data" -U "$ROLE" --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
            >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
    fi
    port=$(free_port)
    if [[ ${PG_FAST:-0} == 1 ]]; then
        fast_opts="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    as_owner "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t "$START_TIMEOUT_S" start \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$DIR' $fast_opts" \
        >/dev/null || { tail -n 20 "$DIR/server.log" >&2; exit 1; }
    if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U "$ROLE" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'" | grep -q 1; then
        "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$ROLE" "$DATABASE"
    fi
    echo "RHINOBOX_CATALOG=postgresql://$ROLE@127.0.0.1:$port/$DATABASE" | tee "$DIR/env"
}

stop() {
    local bin
    bin=$(pg_bin)
    if [[ -f "$DIR/data/postmaster.pid" ]]; then
        as_owner "$bin/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
    fi
}

[[ $# -eq 2 ]] || usage
DIR=$(realpath -m "$2")
case "$1" in
start) start ;;
stop) stop ;;
*) usage ;;
esac
