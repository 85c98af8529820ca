#!/usr/bin/env bash
# Sets everything up and runs one real build: installs the dependencies, compiles,
# starts a private buildkitd and a builder-shim beside it, builds examples/hello with
# `builder-shim build`, prints the resulting tree, and stops both daemons.
# Usage: bash scripts/demo.sh [OUTPUT_DIR]   (default ./out/hello)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$(realpath -m "${1:-out/hello}")"
bash scripts/install-deps.sh
. scripts/deps-env.sh
npm run --silent build

state="$(mktemp -d "${TMPDIR:-/tmp}/builder-shim-demo.XXXXXX")"
bk_pid="" shim_pid=""
cleanup() {
  [ -n "$shim_pid" ] && kill "$shim_pid" 2>/dev/null && wait "$shim_pid" 2>/dev/null || true
  [ -n "$bk_pid" ] && kill "$bk_pid" 2>/dev/null && wait "$bk_pid" 2>/dev/null || true
  grep " $state/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT

echo "== starting buildkitd ($(buildkitd --version | awk '{print $3}'))"
buildkitd --root "$state/buildkit" --addr "unix://$state/buildkitd.sock" \
  --oci-worker=true --containerd-worker=false --oci-worker-binary "$(command -v runc)" \
  >"$state/buildkitd.log" 2>&1 &
bk_pid=$!
for _ in $(seq 1 100); do
  buildctl --addr "unix://$state/buildkitd.sock" debug workers >/dev/null 2>&1 && break
  kill -0 "$bk_pid" 2>/dev/null || { cat "$state/buildkitd.log"; exit 1; }
  sleep 0.2
done

echo "== starting builder-shim serve"
bin/builder-shim serve --listen "unix://$state/shim.sock" --buildkit-addr "unix://$state/buildkitd.sock" \
  --exports-dir "$state/exports" --cache-dir "$state/cache" >"$state/shim.log" 2>&1 &
shim_pid=$!
for _ in $(seq 1 50); do
  bin/builder-shim info --builder "unix://$state/shim.sock" --timeout 1 >/dev/null 2>&1 && break
  kill -0 "$shim_pid" 2>/dev/null || { cat "$state/shim.log"; exit 1; }
  sleep 0.2
done

echo "== builder-shim build examples/hello -o type=local,dest=$out"
rm -rf "$out"
bin/builder-shim build --builder "unix://$state/shim.sock" --exports-dir "$state/exports" \
  -t example/hello:latest -o "type=local,dest=$out" examples/hello
echo "== result"
find "$out" -printf '%M %8s  %P\n' | sort -k3
