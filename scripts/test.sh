#!/usr/bin/env bash
# The whole test suite: installs what the tests need (idempotent, quick when already
# installed), compiles, and runs every unit and integration test against a real
# buildkitd and registry that the harness starts. Extra arguments go to vitest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/install-deps.sh >/dev/null
# shellcheck source=deps-env.sh
. scripts/deps-env.sh
npm run --silent build
report="$(mktemp "${TMPDIR:-/tmp}/builder-shim-vitest.XXXXXX.json")"
trap 'rm -f "$report"' EXIT
rc=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || rc=$?
# One plain summary line that any CI can read.
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
' "$report" || { echo "tests: 0 passed, 1 failed"; rc=1; }
exit "$rc"
