#!/usr/bin/env bash
# Local scale-out topology: N replicas of the real server (gunicorn on 127.0.0.1) behind nginx,
# configured from deploy/nginx/nginx.conf.template (compose uses HAProxy: deploy/haproxy/).
#
#   deploy/local_cluster.sh start [N]   N replicas (default 3), balancer on ${PORT:-1313}
#   deploy/local_cluster.sh status
#   deploy/local_cluster.sh stop
#
# Environment: PORT (balancer, 1313), BASE_PORT (first replica, 18001; then 18002, ...),
# CLUSTER_DIR (pids, logs, nginx.conf; default .run/cluster), WEB_CONCURRENCY (workers per
# replica, default 1: the replicas share this machine's cores), RATE_LIMIT_RPS (requests per
# second per client at nginx, default 0: no limit) and RATE_LIMIT_BURST (default 20); with
# API_KEYS_FILE set, each API key is a client of its own. Everything else (GUNICORN_TIMEOUT,
# MAX_BODY_MB, MODEL_STORE, API_KEYS_FILE, ...) reaches every replica as it reaches run_api.sh.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."

PORT=${PORT:-1313}
BASE_PORT=${BASE_PORT:-18001}
RUN_DIR=$(realpath -m "${CLUSTER_DIR:-.run/cluster}")
PYTHON=.venv/bin/python

die() { echo "local_cluster: $*" >&2; exit 1; }

# Live (non-zombie) members of a process group: each replica is its own group (setsid below).
group_alive() { ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {found=1} END {exit !found}'; }

# wait_http URL SECONDS [PGID]: poll until URL answers 200; give up early if the group died.
wait_http() {
    local deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
        if [[ -n ${3:-} ]] && ! group_alive "$3"; then return 1; fi
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

stop_group() {  # stop_group PIDFILE SIGNAL: signal the group, wait, then SIGKILL what is left
    [[ -f $1 ]] || return 0
    local pgid deadline=$((SECONDS + ${GRACEFUL_TIMEOUT:-30} + 5))
    pgid=$(<"$1")
    kill "-$2" -- "-$pgid" 2>/dev/null || true
    while group_alive "$pgid" && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL -- "-$pgid" 2>/dev/null || true
    rm -f "$1"
}

start() {
    local n=${1:-3} i port pgid servers=() user=()
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "replica count must be a positive integer, got '$n'"
    command -v nginx >/dev/null || die "nginx is not installed (Debian/Ubuntu: apt-get install -y nginx)"
    command -v curl >/dev/null || die "curl is not installed"
    [[ -x .venv/bin/gunicorn ]] || die "no .venv with gunicorn: run ./run_api.sh once to create it"
    # Every replica reads the same model store and follows its pointer (MODEL_DIR pins a directory).
    local model=${MODEL_DIR:+$MODEL_DIR/manifest.json}
    model=${model:-${MODEL_STORE:-lib/model_store}/active.json}
    [[ -f $model ]] ||
        die "no model artifacts: no $model; run ./run_api.sh once," \
            "or: .venv/bin/python -m lib.training.synth && .venv/bin/python -m lib.training.train"
    [[ ! -f $RUN_DIR/balancer.pid ]] || die "already started in $RUN_DIR ($0 stop first)"
    mkdir -p "$RUN_DIR/nginx-temp"

    for ((i = 1; i <= n; i++)); do
        port=$((BASE_PORT + i - 1))
        rm -rf "$RUN_DIR/replica-$i" && mkdir -p "$RUN_DIR/replica-$i/prometheus"
        # setsid: the gunicorn master leads its own process group, so one signal to the group
        # reaches the master and all its workers (stop, and the failover test's SIGKILL).
        # One worker per replica unless WEB_CONCURRENCY says otherwise: the replicas share this
        # machine's cores, so N replicas of one worker per core each would oversubscribe them.
        WEB_CONCURRENCY=${WEB_CONCURRENCY:-1} \
        BIND=127.0.0.1:$port PROMETHEUS_MULTIPROC_DIR=$RUN_DIR/replica-$i/prometheus \
            setsid .venv/bin/gunicorn -c gunicorn.conf.py 'flaskapp:create_app()' \
            >"$RUN_DIR/replica-$i/gunicorn.log" 2>&1 </dev/null &
        echo $! >"$RUN_DIR/replica-$i.pid"
        echo "$port" >"$RUN_DIR/replica-$i.port"
        servers+=(--server "127.0.0.1:$port")
    done
    for ((i = 1; i <= n; i++)); do
        port=$(<"$RUN_DIR/replica-$i.port") pgid=$(<"$RUN_DIR/replica-$i.pid")
        wait_http "http://127.0.0.1:$port/ready" 120 "$pgid" || {
            tail -n 20 "$RUN_DIR/replica-$i/gunicorn.log" >&2
            stop
            die "replica $i (port $port) did not become ready; log above"
        }
    done

    # As root, nginx would hand its workers to `nobody`; keep the caller's identity instead.
    [[ $(id -u) != 0 ]] || user=(--user "$(id -un)")
    "$PYTHON" deploy/render_nginx.py local --run-dir "$RUN_DIR" --listen "$PORT" "${servers[@]}" \
        "${user[@]}" --max-body-mb "${MAX_BODY_MB:-400}" --timeout "${GUNICORN_TIMEOUT:-300}" \
        --rate-limit-rps "${RATE_LIMIT_RPS:-0}" --rate-limit-burst "${RATE_LIMIT_BURST:-20}" \
        --rate-key "$([[ -n ${API_KEYS_FILE:-} ]] && echo key || echo address)" \
        -o "$RUN_DIR/nginx.conf" || { stop; die "could not render nginx.conf; error above"; }
    nginx -t -q -p "$RUN_DIR" -c "$RUN_DIR/nginx.conf" -e stderr || { stop; die "nginx -t failed"; }
    setsid nginx -p "$RUN_DIR" -c "$RUN_DIR/nginx.conf" -e stderr -g 'daemon off;' \
        >"$RUN_DIR/nginx.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/balancer.pid"
    echo "$PORT" >"$RUN_DIR/balancer.port"
    wait_http "http://127.0.0.1:$PORT/ready" 20 "$!" || {
        cat "$RUN_DIR/nginx.log" >&2
        stop
        die "nginx did not start on port $PORT; log above"
    }
    echo "local_cluster: $n replicas (ports $BASE_PORT-$((BASE_PORT + n - 1))) behind" \
        "http://127.0.0.1:$PORT; logs in $RUN_DIR"
}

stop() {
    local f
    # Balancer first (graceful QUIT finishes in-flight requests), then replicas (TERM: gunicorn
    # lets in-flight requests finish within GRACEFUL_TIMEOUT).
    stop_group "$RUN_DIR/balancer.pid" QUIT
    for f in "$RUN_DIR"/replica-*.pid; do stop_group "$f" TERM; done
    echo "local_cluster: stopped ($RUN_DIR)"
}

status() {
    local f name pgid port code rc=0
    for f in "$RUN_DIR"/replica-*.pid "$RUN_DIR"/balancer.pid; do
        [[ -e $f ]] || continue
        pgid=$(<"$f") name=$(basename "$f" .pid)
        port=$(<"${f%.pid}.port")
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/ready" || true)
        if group_alive "$pgid"; then
            echo "$name: pid $pgid, port $port, /ready $code"
        else
            echo "$name: pid $pgid, port $port, DEAD"
            rc=1
        fi
    done
    [[ -e $RUN_DIR/balancer.pid ]] || { echo "local_cluster: not running ($RUN_DIR)"; rc=3; }
    return "$rc"
}

case ${1:-} in
    start) start "${2:-3}" ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start [N] | stop | status" ;;
esac
