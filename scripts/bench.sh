#!/usr/bin/env bash
# Benchmarks builder-shim against buildctl on the same buildkitd (see bench/). Prints a
# table and writes bench/results/latest.md. Takes a few minutes and ~4 GB of disk.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/install-deps.sh >/dev/null
. scripts/deps-env.sh
npm run --silent build
exec npx vitest run --config bench/vitest.config.ts "$@"
