#!/usr/bin/env bash
# Builds this plugin and runs it through backflow's conformance suite (`backflow plugin
# conformance`): the same host code a sync uses. Set BACKFLOW to the backflow binary if it is
# not on PATH; SKIP_BUILD=1 tests dist/plugin.wasm as it is.
set -euo pipefail
cd "$(dirname "$0")"
BACKFLOW=${BACKFLOW:-backflow}
[ "${SKIP_BUILD:-}" = 1 ] || ./build.sh
"$BACKFLOW" plugin conformance dist/plugin.wasm --config @test/config.json
