#!/usr/bin/env bash
# Property-based checks of the OpenAPI documents against a live caracal-control, with
# schemathesis (PyPI; a tool none of us wrote): no 5xx and every response matches its schema.
#
# Starts the caracal-control binary in dev mode on the in-memory store (no DATABASE_URL /
# REDIS_URL) on two free ports, then runs schemathesis against the Admin API (with the
# bootstrap admin token) and against the Coordinator (with the operator token, so the
# operator routes are exercised past authentication), each bounded in examples and time.
#
# Environment:
#   CARACAL_CONTROL_BIN         the binary (default: built with cargo into the target dir)
#   SCHEMATHESIS_MAX_EXAMPLES   test cases per operation (default 20)
#   SCHEMATHESIS_MAX_TIME       wall-clock bound per API in seconds (default 300; exceeding it fails)
#   SCHEMATHESIS_SEED           fixed seed (default 1, reproducible)
#
# Install schemathesis with: python3 -m pip install 'schemathesis==4.32.5'
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-20}"
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-300}"
SEED="${SCHEMATHESIS_SEED:-1}"
ST="${SCHEMATHESIS:-schemathesis}"

if ! command -v "$ST" >/dev/null 2>&1; then
    echo "schemathesis is not installed (python3 -m pip install 'schemathesis==4.32.5')" >&2
    exit 2
fi

BIN="${CARACAL_CONTROL_BIN:-}"
if [ -z "$BIN" ]; then
    cargo build --quiet -p caracal-control --bin caracal-control
    BIN="${CARGO_TARGET_DIR:-target}/debug/caracal-control"
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
ADMIN_PORT="$(free_port)"
COORDINATOR_PORT="$(free_port)"
BOOT="schemathesis-bootstrap-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
OPERATOR="schemathesis-operator-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
WORK="$(mktemp -d)"
LOG="$WORK/caracal-control.log"

CARACAL_MODE=dev \
SECRET_STORE_KEK="$(python3 -c 'import secrets; print(secrets.token_hex(32))')" \
ISSUER_URL="http://127.0.0.1:1" \
CARACAL_BOOTSTRAP_ADMIN_TOKEN="$BOOT" \
CARACAL_COORDINATOR_TOKEN="$OPERATOR" \
ADMIN_PORT="$ADMIN_PORT" \
COORDINATOR_PORT="$COORDINATOR_PORT" \
DATABASE_URL= REDIS_URL= \
RUST_LOG="${RUST_LOG:-warn}" \
    "$BIN" >"$LOG" 2>&1 &
PID=$!
cleanup() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for port in "$ADMIN_PORT" "$COORDINATOR_PORT"; do
    ok=
    for _ in $(seq 1 150); do
        if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=1)" 2>/dev/null; then
            ok=1
            break
        fi
        if ! kill -0 "$PID" 2>/dev/null; then
            echo "caracal-control exited:" >&2
            cat "$LOG" >&2
            exit 1
        fi
        sleep 0.2
    done
    if [ -z "$ok" ]; then
        echo "caracal-control did not answer /health on port $port within 30 s" >&2
        cat "$LOG" >&2
        exit 1
    fi
done

run() {
    local name="$1" port="$2" token="$3"
    echo "== schemathesis: $name (127.0.0.1:$port)"
    # From the scratch directory: schemathesis keeps its example database in the cwd.
    (cd "$WORK" && timeout --kill-after=10 "$MAX_TIME" "$ST" run "http://127.0.0.1:$port/openapi.json" \
        --url "http://127.0.0.1:$port" \
        --checks not_a_server_error,response_schema_conformance \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --workers 1 \
        --request-timeout 10 \
        --suppress-health-check all \
        --warnings off \
        -H "Authorization: Bearer $token")
}

status=0
run "Admin API" "$ADMIN_PORT" "$BOOT" || status=$?
run "Coordinator" "$COORDINATOR_PORT" "$OPERATOR" || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- caracal-control log (tail)" >&2
    tail -n 50 "$LOG" >&2
fi
exit "$status"
