#!/usr/bin/env bash
# A private single-node OpenStack Swift (Debian's packages) with the s3api and tempauth middlewares,
# for tests and developers: memcached, account, container, object and proxy servers on free loopback
# ports, all state (rings, configs, objects, logs, pids) under one directory.
#
#   scripts/swift.sh start DIR [BUCKET]   start, create BUCKET (default: rhinobox), print settings
#   scripts/swift.sh stop DIR             stop every process started for DIR
#
# `start` prints RHINOBOX_* lines (also written to DIR/env) that point RhinoBox at the bucket:
#   eval "$(scripts/swift.sh start /tmp/swift)"; export RHINOBOX_BLOBS RHINOBOX_S3_ENDPOINT ...
# DIR must be on a filesystem with user xattrs (ext4, xfs; /tmp on this machine is ext4).
# SWIFT_WORKERS=N forks N processes per server (default 0: each server is one process, enough for tests).
set -euo pipefail

ACCESS_KEY="test:tester"
SECRET_KEY="testing"
PART_POWER=6
WORKERS=${SWIFT_WORKERS:-0}
START_TIMEOUT_S=30

usage() {
    echo "usage: $0 start DIR [BUCKET] | stop DIR" >&2
    exit 2
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_server_conf() { # name port app
    cat >"$ETC/$1.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $2
workers = $WORKERS
user = $(id -un)
swift_dir = $ETC
devices = $DIR/srv
mount_check = false
log_level = WARNING

[pipeline:main]
pipeline = $1

[app:$1]
use = egg:swift#$3
EOF
}

write_proxy_conf() { # port memcached_port
    cat >"$ETC/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $1
workers = $WORKERS
user = $(id -un)
swift_dir = $ETC
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = $SECRET_KEY .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$2

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
EOF
}

build_rings() { # account_port container_port object_port
    # One Python process for the three rings (swift-ring-builder would take three per ring).
    /usr/bin/python3 - "$ETC" "$PART_POWER" "$@" <<'PY'
import sys
from swift.common.ring import RingBuilder

etc, part_power = sys.argv[1], int(sys.argv[2])
for kind, port in zip(("account", "container", "object"), sys.argv[3:]):
    builder = RingBuilder(part_power, 1, 1)
    builder.add_dev({"region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port), "device": "d1", "weight": 100})
    builder.rebalance()
    builder.get_ring().save(f"{etc}/{kind}.ring.gz")
PY
}

spawn() { # name command...
    local name=$1
    shift
    "$@" >>"$DIR/log/$name.log" 2>&1 &
    echo $! >"$DIR/run/$name.pid"
}

wait_http() { # url
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until curl -sf -o /dev/null "$1"; do
        if ((SECONDS > deadline)); then
            echo "swift.sh: $1 did not answer in ${START_TIMEOUT_S}s; logs in $DIR/log" >&2
            exit 1
        fi
        sleep 0.1
    done
}

create_bucket() { # proxy_port bucket
    local headers token storage
    headers=$(curl -sf -D - -o /dev/null -H "X-Auth-User: $ACCESS_KEY" -H "X-Auth-Key: $SECRET_KEY" \
        "http://127.0.0.1:$1/auth/v1.0") || return 1
    token=$(printf '%s' "$headers" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-auth-token" {print $2}')
    storage=$(printf '%s' "$headers" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-storage-url" {print $2}')
    curl -sf -o /dev/null -X PUT -H "X-Auth-Token: $token" "$storage/$2"
}

create_bucket_when_ready() { # proxy_port bucket: the account and container servers may still be starting
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until create_bucket "$1" "$2"; do
        if ((SECONDS > deadline)); then
            echo "swift.sh: could not create bucket $2; logs in $DIR/log" >&2
            exit 1
        fi
        sleep 0.2
    done
}

start() {
    local bucket=${1:-rhinobox}
    mkdir -p "$DIR/etc" "$DIR/srv/d1" "$DIR/log" "$DIR/run"
    if compgen -G "$DIR/run/*.pid" >/dev/null; then
        echo "swift.sh: $DIR has running processes; stop it first" >&2
        exit 1
    fi
    trap 'if (($? != 0)); then stop; fi' EXIT # a failed start leaves nothing running
    local p_account p_container p_object p_proxy p_memcached
    p_account=$(free_port) p_container=$(free_port) p_object=$(free_port)
    p_proxy=$(free_port) p_memcached=$(free_port)
    printf '[swift-hash]\nswift_hash_path_prefix = rhinobox\nswift_hash_path_suffix = rhinobox\n\n' >"$ETC/swift.conf"
    printf '[storage-policy:0]\nname = Policy-0\ndefault = yes\n' >>"$ETC/swift.conf"
    write_server_conf account-server "$p_account" account
    write_server_conf container-server "$p_container" container
    write_server_conf object-server "$p_object" object
    write_proxy_conf "$p_proxy" "$p_memcached"
    build_rings "$p_account" "$p_container" "$p_object"

    spawn memcached memcached -l 127.0.0.1 -p "$p_memcached" -U 0 -m 64 -u "$(id -un)"
    spawn account swift-account-server "$ETC/account-server.conf"
    spawn container swift-container-server "$ETC/container-server.conf"
    spawn object swift-object-server "$ETC/object-server.conf"
    spawn proxy swift-proxy-server "$ETC/proxy-server.conf"
    wait_http "http://127.0.0.1:$p_proxy/healthcheck"
    create_bucket_when_ready "$p_proxy" "$bucket"

    cat >"$DIR/env" <<EOF
RHINOBOX_BLOBS=s3://$bucket/blobs
RHINOBOX_S3_ENDPOINT=http://127.0.0.1:$p_proxy
RHINOBOX_S3_REGION=us-east-1
RHINOBOX_S3_ACCESS_KEY=$ACCESS_KEY
RHINOBOX_S3_SECRET_KEY=$SECRET_KEY
EOF
    cat "$DIR/env"
}

stop() {
    local pidfile pids=()
    for pidfile in "$DIR"/run/*.pid; do
        [[ -e $pidfile ]] || continue
        pids+=("$(cat "$pidfile")")
        rm -f "$pidfile"
    done
    ((${#pids[@]})) || return 0
    kill "${pids[@]}" 2>/dev/null || true # all at once: each takes a moment to wind down
    local pid alive
    for _ in $(seq 50); do
        alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        ((alive)) || return 0
        sleep 0.1
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
}

[[ $# -ge 2 ]] || usage
DIR=$(realpath -m "$2")
ETC="$DIR/etc"
case "$1" in
start) start "${3:-}" ;;
stop) stop ;;
*) usage ;;
esac
