#!/bin/sh
# The builder image's entrypoint: buildkitd becomes PID 1 (this script execs it) and
# builder-shim runs beside it as PID 2. Signals reach buildkitd directly; the shim follows
# it: it shuts down gracefully as soon as the process it was told to watch is gone.
# Arguments are passed to buildkitd.
#
# Environment (defaults in brackets):
#   BUILDER_SHIM_LISTEN   where the shim listens [vsock://:8088]; several, space-separated
#   BUILDER_SHIM_EXPORTS  exports directory shared with the host [/var/lib/container-builder-shim/exports]
#   BUILDER_SHIM_CACHE    context cache [/var/lib/container-builder-shim/cache]
#   BUILDKIT_SOCK         buildkitd's socket [/run/buildkit/buildkitd.sock]
#   BUILDER_SHIM_BIN      [/opt/builder-shim/bin/builder-shim]   BUILDKITD_BIN [buildkitd]
set -eu
listen="${BUILDER_SHIM_LISTEN:-vsock://:8088}"
exports="${BUILDER_SHIM_EXPORTS:-/var/lib/container-builder-shim/exports}"
cache="${BUILDER_SHIM_CACHE:-/var/lib/container-builder-shim/cache}"
bk_sock="${BUILDKIT_SOCK:-/run/buildkit/buildkitd.sock}"
shim="${BUILDER_SHIM_BIN:-/opt/builder-shim/bin/builder-shim}"
buildkitd_bin="${BUILDKITD_BIN:-buildkitd}"

mkdir -p "$(dirname "$bk_sock")" "$exports" "$cache"
listen_args=""
for l in $listen; do listen_args="$listen_args --listen $l"; done
# shellcheck disable=SC2086 # one word per listen address
"$shim" serve $listen_args --buildkit-addr "unix://$bk_sock" --exports-dir "$exports" \
  --cache-dir "$cache" --stop-with-pid "$$" &
exec "$buildkitd_bin" --addr "unix://$bk_sock" "$@"
