#!/usr/bin/env bash
# Regenerates src/gen/ (typed TypeScript, ts-proto) from every .proto under proto/, with
# plain service definitions (ts-proto generic-definitions) and no grpc-js import: neither
# the host CLI nor the shim loads grpc-js (about 120 ms of start-up); the shim serves with
# src/rpc/server.ts and calls buildkitd with src/rpc/client.ts. Tests that want grpc-js
# clients make them from the definitions (test/harness/grpc-service.ts).
# Uses only locally installed tools: the protoc npm package (binary + well-known-type
# includes) and the ts-proto plugin. Nothing is downloaded. Output is deterministic.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

PROTOC="$ROOT/node_modules/.bin/protoc"
PLUGIN="$ROOT/node_modules/.bin/protoc-gen-ts_proto"
WKT_INCLUDE="$ROOT/node_modules/protoc/include"
PROTO_DIR="proto"
OUT_DIR="src/gen"

COMMON_OPTS="forceLong=bigint,esModuleInterop=true,importSuffix=.js,env=node,useDate=false,outputTypeRegistry=false,snakeToCamel=true"

for f in "$PROTOC" "$PLUGIN"; do
  [[ -x "$f" ]] || { echo "gen-proto: missing $f (run npm ci)" >&2; exit 1; }
done
[[ -f "$WKT_INCLUDE/google/protobuf/timestamp.proto" ]] || {
  echo "gen-proto: well-known types not found under $WKT_INCLUDE" >&2; exit 1; }

# Stable, locale-independent input order; paths relative to proto/ so import
# paths and output layout match (e.g. github.com/moby/buildkit/...).
mapfile -t PROTOS < <(cd "$PROTO_DIR" && find . -type f -name '*.proto' | sed 's|^\./||' | LC_ALL=C sort)
if [[ ${#PROTOS[@]} -eq 0 ]]; then
  echo "gen-proto: no .proto files under $PROTO_DIR" >&2; exit 1
fi

# Generate into a temp dir first so a failure never leaves src/gen half-written.
TMP_OUT="$(mktemp -d "${TMPDIR:-/tmp}/gen-proto.XXXXXX")"
trap 'rm -rf "$TMP_OUT"' EXIT

generate() { # services-option proto...
  local services="$1"
  shift
  [[ $# -gt 0 ]] || return 0
  "$PROTOC" \
    --plugin=protoc-gen-ts_proto="$PLUGIN" \
    --ts_proto_out="$TMP_OUT" \
    --ts_proto_opt="outputServices=$services,$COMMON_OPTS" \
    -I "$PROTO_DIR" \
    -I "$WKT_INCLUDE" \
    "${@/#/$PROTO_DIR/}"
}
generate generic-definitions "${PROTOS[@]}"

# Decoded bytes fields become views of the message buffer instead of copies (ts-proto's
# env=node copies each one). Every buffer we decode is owned by that one message: our
# deframer hands out assembled buffers or views it chose not to copy, grpc-js one buffer
# per message. For a 4 MiB context chunk this saves one copy of every byte received.
find "$TMP_OUT" -name '*.ts' -print0 | xargs -0 sed -i \
  's/Buffer\.from(reader\.bytes())/((b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength))(reader.bytes())/g'

rm -rf "$OUT_DIR"
mkdir -p "$(dirname "$OUT_DIR")"
cp -R "$TMP_OUT" "$OUT_DIR"
chmod -R u+rwX,go+rX "$OUT_DIR"

echo "gen-proto: generated $(find "$OUT_DIR" -name '*.ts' | wc -l) files into $OUT_DIR from ${#PROTOS[@]} protos"
