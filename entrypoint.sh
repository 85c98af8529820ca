#!/bin/sh
# Starts buildkitd and builder-shim beside it; stops both when either ends or on a signal.
# Environment: BUILDER_SHIM_LISTEN (default unix:///run/builder-shim.sock),
# BUILDER_SHIM_EXPORTS (default /var/lib/container-builder-shim/exports).
set -eu
listen="${BUILDER_SHIM_LISTEN:-unix:///run/builder-shim.sock}"
exports="${BUILDER_SHIM_EXPORTS:-/var/lib/container-builder-shim/exports}"
cache="${BUILDER_SHIM_CACHE:-/var/lib/container-builder-shim/cache}"
bk_sock="${BUILDKIT_SOCK:-/run/buildkit/buildkitd.sock}"
shim="${BUILDER_SHIM_BIN:-/opt/builder-shim/bin/builder-shim}"
buildkitd_bin="${BUILDKITD_BIN:-buildkitd}"

mkdir -p "$(dirname "$bk_sock")"
"$buildkitd_bin" --addr "unix://$bk_sock" "$@" &
bk=$!
"$shim" serve --listen "$listen" --buildkit-addr "unix://$bk_sock" --exports-dir "$exports" --cache-dir "$cache" &
sh_pid=$!

stop() {
  kill -TERM "$sh_pid" "$bk" 2>/dev/null || true
}
trap stop TERM INT
# Wait for either child; then stop the other.
while kill -0 "$bk" 2>/dev/null && kill -0 "$sh_pid" 2>/dev/null; do
  wait -n 2>/dev/null || sleep 1
done
stop
wait "$sh_pid" 2>/dev/null || true
wait "$bk" 2>/dev/null || true
