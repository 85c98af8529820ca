#!/usr/bin/env bash
# Compiles the in-project N-API addons (native/<name>/<name>.c: vsock, fsutil) into
# build/native/<name>.node with the system C compiler and the Node headers; no download,
# no node-gyp.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
inc="${NODE_INCLUDE_DIR:-$(node -p "require('path').resolve(process.execPath, '../../include/node')")}"
[ -f "$inc/node_api.h" ] || inc=/usr/include/node
[ -f "$inc/node_api.h" ] || { echo "build-native: node_api.h not found (install the Node headers, e.g. Debian's libnode-dev)" >&2; exit 1; }
mkdir -p "$repo/build/native"
for name in vsock fsutil; do
  src="$repo/native/$name/$name.c"
  out="$repo/build/native/$name.node"
  if [ -f "$out" ] && [ "$out" -nt "$src" ]; then continue; fi
  "${CC:-cc}" -O2 -Wall -Wextra -Wno-unused-parameter -shared -fPIC -DNODE_GYP_MODULE_NAME="$name" -I"$inc" "$src" -o "$out.tmp"
  mv "$out.tmp" "$out"
done
