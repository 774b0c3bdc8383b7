#!/usr/bin/env bash
# A whole scale-out set-up on this machine, for trying it and for load figures (docs/scale-out.md):
# a private PostgreSQL (scripts/postgres.sh), a private Swift with s3api (scripts/swift.sh), N RhinoBox
# nodes sharing both, and nginx in front of them. Everything binds 127.0.0.1; all state is under DIR.
#
#   scripts/cluster.sh start DIR [NODES]   start (default 2 nodes); prints RHINOBOX_URL=http://...
#   scripts/cluster.sh stop DIR            stop nginx, the nodes, Swift and PostgreSQL
#
# Extra RHINOBOX_* variables in the environment reach every node (e.g. RHINOBOX_WORKERS=4).
set -euo pipefail
cd "$(dirname "$0")/.."

START_TIMEOUT_S=30

usage() {
    echo "usage: $0 start DIR [NODES] | stop DIR" >&2
    exit 2
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # url
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until curl -sf -o /dev/null "$1"; do
        if ((SECONDS > deadline)); then
            echo "cluster.sh: $1 did not answer in ${START_TIMEOUT_S}s; logs in $DIR" >&2
            exit 1
        fi
        sleep 0.1
    done
}

write_nginx_conf() { # port upstreams...
    local port=$1 user=""
    shift
    [[ $(id -u) == 0 ]] && user="user root;"
    mkdir -p "$DIR/nginx"
    {
        echo "$user"
        echo "worker_processes 1;"
        echo "pid $DIR/nginx/nginx.pid;"
        echo "events { worker_connections 1024; }"
        echo "http {"
        echo "    access_log off;"
        for kind in client_body proxy fastcgi uwsgi scgi; do echo "    ${kind}_temp_path $DIR/nginx/$kind;"; done
        echo "    client_max_body_size 0;"
        echo "    upstream rhinobox {"
        for upstream in "$@"; do echo "        server $upstream max_fails=1 fail_timeout=10s;"; done
        echo "        keepalive 32;"
        echo "    }"
        echo "    server {"
        echo "        listen 127.0.0.1:$port;"
        echo "        location / {"
        echo "            proxy_pass http://rhinobox;"
        echo "            proxy_http_version 1.1;"
        echo "            proxy_set_header Connection \"\";"
        echo "            proxy_request_buffering off;"
        echo "            proxy_buffering off;"
        echo "            proxy_read_timeout 300s;"
        echo "        }"
        echo "    }"
        echo "}"
    } >"$DIR/nginx/nginx.conf"
}

start() {
    local nodes=${1:-2} port upstreams=() i
    mkdir -p "$DIR"
    trap 'if (($? != 0)); then stop; fi' EXIT
    scripts/postgres.sh start "$DIR/postgres" >/dev/null
    scripts/swift.sh start "$DIR/swift" >/dev/null
    set -a
    # shellcheck disable=SC1091
    source "$DIR/postgres/env"
    # shellcheck disable=SC1091
    source "$DIR/swift/env"
    set +a
    for ((i = 1; i <= nodes; i++)); do
        port=$(free_port)
        mkdir -p "$DIR/node$i"
        RHINOBOX_DATA_DIR="$DIR/node$i" RHINOBOX_ADDR="127.0.0.1:$port" \
            .venv/bin/python -m rhinobox serve >"$DIR/node$i.out" 2>"$DIR/node$i.log" &
        echo $! >"$DIR/node$i.pid"
        upstreams+=("127.0.0.1:$port")
    done
    for upstream in "${upstreams[@]}"; do wait_http "http://$upstream/healthz"; done
    port=$(free_port)
    write_nginx_conf "$port" "${upstreams[@]}"
    nginx -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/error.log"
    wait_http "http://127.0.0.1:$port/healthz"
    echo "RHINOBOX_URL=http://127.0.0.1:$port" | tee "$DIR/env"
}

stop() {
    local pidfile
    if [[ -f "$DIR/nginx/nginx.pid" ]]; then
        nginx -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/error.log" -s quit 2>/dev/null || true
    fi
    for pidfile in "$DIR"/node*.pid; do
        [[ -e $pidfile ]] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
    sleep 1 # the nodes close their PostgreSQL connections and S3 clients
    scripts/swift.sh stop "$DIR/swift" || true
    scripts/postgres.sh stop "$DIR/postgres" || true
}

[[ $# -ge 2 ]] || usage
DIR=$(realpath -m "$2")
case "$1" in
start) start "${3:-2}" ;;
stop) stop ;;
*) usage ;;
esac
