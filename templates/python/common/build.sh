#!/usr/bin/env bash
# Builds dist/plugin.wasm, a WebAssembly component of the backflow world `{{world}}`
# (wit/plugin.wit, contract backflow:plugin@0.2.0), from this directory's Python code.
# Installs the pinned componentize-py into .venv the first time (PyPI); set COMPONENTIZE_PY
# to use another installation of the same version, PYTHON to pick the Python that runs it.
set -euo pipefail
cd "$(dirname "$0")"
WORLD={{world}}
COMPONENTIZE_PY_VERSION=0.25.1
cpy=${COMPONENTIZE_PY:-.venv/bin/componentize-py}
if ! "$cpy" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
  if [ -n "${COMPONENTIZE_PY:-}" ]; then
    echo "$cpy is not componentize-py $COMPONENTIZE_PY_VERSION" >&2
    exit 1
  fi
  echo "installing componentize-py $COMPONENTIZE_PY_VERSION into .venv"
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
# Bindings for editors and type checkers (point them at .bindings); the build makes its own.
rm -rf .bindings
"$cpy" --quiet -d wit -w "$WORLD" bindings .bindings
# An import inside a function would be missing from the component (componentize-py keeps only
# the modules imported while it builds): fail now, naming it, rather than in the middle of a run.
"${PYTHON:-python3}" -m backflow_sdk.build_check .
mkdir -p dist
"$cpy" --quiet -d wit -w "$WORLD" componentize app -o dist/plugin.wasm
echo "built dist/plugin.wasm ($(( $(wc -c < dist/plugin.wasm) / 1024 )) KiB)"
