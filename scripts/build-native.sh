#!/usr/bin/env bash
# Compiles the in-project vsock N-API addon (native/vsock) into build/native/vsock.node
# with the system C compiler and the Node headers; no download, no node-gyp.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/build/native/vsock.node"
src="$repo/native/vsock/vsock.c"
inc="${NODE_INCLUDE_DIR:-$(node -p "require('path').resolve(process.execPath, '../../include/node')")}"
[ -f "$inc/node_api.h" ] || inc=/usr/include/node
[ -f "$inc/node_api.h" ] || { echo "build-native: node_api.h not found (install the Node headers, e.g. Debian's libnode-dev)" >&2; exit 1; }
if [ -f "$out" ] && [ "$out" -nt "$src" ]; then exit 0; fi
mkdir -p "$(dirname "$out")"
"${CC:-cc}" -O2 -Wall -Wextra -Wno-unused-parameter -shared -fPIC -DNODE_GYP_MODULE_NAME=vsock -I"$inc" "$src" -o "$out.tmp"
mv "$out.tmp" "$out"
