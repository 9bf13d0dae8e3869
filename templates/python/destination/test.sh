#!/usr/bin/env bash
# Builds this plugin and runs it through backflow's conformance suite (`backflow plugin
# conformance`): the same host code a sync uses. A local `backflow receiver` stands in for
# the API; afterwards test/check_received.py checks what it received. Set BACKFLOW to the
# backflow binary if it is not on PATH; SKIP_BUILD=1 tests dist/plugin.wasm as it is.
set -euo pipefail
cd "$(dirname "$0")"
BACKFLOW=${BACKFLOW:-backflow}
[ "${SKIP_BUILD:-}" = 1 ] || ./build.sh
# Unit tests first: destination.py natively with a fake host, on test/config.json and
# test/rows.jsonl (backflow_sdk.testing; they need the .bindings build.sh wrote).
"${PYTHON:-python3}" -m unittest discover -s test
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }
port=$(free_port)
tmp=$(mktemp -d)
"$BACKFLOW" receiver --host 127.0.0.1 --port "$port" --out "$tmp/received.jsonl" >/dev/null 2>&1 &
receiver=$!
trap 'kill $receiver 2>/dev/null || true; rm -rf "$tmp"' EXIT
wait_for "$port"
sed "s/PORT/$port/" test/config.json > "$tmp/config.json"
# Port 9 (nothing listens there) stands in for an unreachable API.
"$BACKFLOW" plugin conformance dist/plugin.wasm --rows test/rows.jsonl \
  --config "@$tmp/config.json" --grant-network "127.0.0.1:$port" \
  --offline-config '{"url": "http://127.0.0.1:9/rows"}' --grant-network 127.0.0.1:9
python3 test/check_received.py "$tmp/received.jsonl"
