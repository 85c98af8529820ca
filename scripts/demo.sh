#!/usr/bin/env bash
# Sets everything up and runs one real build: installs the dependencies, compiles, and
# builds examples/hello with `builder-shim build`, which starts the local builder
# (buildkitd + the shim, under $XDG_STATE_HOME/builder-shim) because none is running.
# Prints the resulting tree, then stops the builder (its cache stays).
# Usage: bash scripts/demo.sh [OUTPUT_DIR]   (default ./out/hello)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$(realpath -m "${1:-out/hello}")"
bash scripts/install-deps.sh
. scripts/deps-env.sh
npm run --silent build

echo "== builder-shim build -t example/hello -o type=local,dest=$out examples/hello"
rm -rf "$out"
bin/builder-shim build -t example/hello:latest -o "type=local,dest=$out" examples/hello
echo "== result"
find "$out" -printf '%M %8s  %P\n' | sort -k3
echo "== builder-shim builder status"
bin/builder-shim builder status || true
bin/builder-shim builder stop
echo "(stopped the local builder; 'bin/builder-shim build ...' starts it again)"
