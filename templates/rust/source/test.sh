#!/usr/bin/env bash
# Builds this plugin and runs it through backflow's conformance suite (`backflow plugin
# conformance`): the same host code a sync uses. Set BACKFLOW to the backflow binary if it is
# not on PATH.
set -euo pipefail
cd "$(dirname "$0")"
BACKFLOW=${BACKFLOW:-backflow}
cargo build --release --target wasm32-wasip2
wasm=${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate_name}}.wasm
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on $1" >&2; return 1; }
# A static file server on loopback stands in for the API.
port=$(free_port)
python3 -m http.server "$port" --bind 127.0.0.1 --directory test >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
wait_for "$port"
"$BACKFLOW" plugin conformance "$wasm" --query /rows.json --grant-network "127.0.0.1:$port" \
  --config "{\"url\": \"http://127.0.0.1:$port\", \"columns\": [{\"name\": \"id\", \"type\": \"integer\"}, {\"name\": \"email\", \"type\": \"text\"}, {\"name\": \"mrr\", \"type\": \"decimal\"}, {\"name\": \"signed_up\", \"type\": \"timestamp\"}]}"
