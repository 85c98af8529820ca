#!/usr/bin/env bash
# Installs everything builder-shim's tests need, idempotently:
#   - buildkitd + buildctl (built from the Go module proxy) into $DEPS/bin
#   - Debian packages: runc, docker-registry, skopeo, umoci, busybox-static, ...
#   - node_modules (npm ci) when missing or older than package-lock.json
# A second run with everything in place takes a few seconds.
#
# DEPS defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/builder-shim/deps and can be
# overridden with BUILDER_SHIM_DEPS. `source scripts/deps-env.sh` puts it on PATH.
#
# Knobs (environment):
#   BUILDKIT_VERSION       buildkit version to build (default v0.26.2, the
#                          version apple's builder image ships)
#   BUILDER_SHIM_SKIP_NPM  set to 1 to skip the node_modules step
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${BUILDER_SHIM_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/builder-shim/deps}"
BUILDKIT_VERSION="${BUILDKIT_VERSION:-v0.26.2}"
BUILDKIT_MODULE=github.com/moby/buildkit
# Same tags upstream's Dockerfile uses for buildkitd (CGO_ENABLED=0 there too).
BUILDKIT_TAGS="osusergo netgo static_build seccomp"
# How many other versions to try (newest first) when $BUILDKIT_VERSION does not build.
BUILDKIT_FALLBACK_TRIES=3

APT_PACKAGES=(
  runc            # OCI runtime for buildkitd's OCI worker
  docker-registry # Distribution registry (/usr/bin/docker-registry) for tests
  skopeo          # pushes the seeded busybox image into the test registry
  umoci           # builds that image as an OCI layout, offline
  busybox-static  # /bin/busybox: the content of that image
  ca-certificates # TLS for the package registries (go, npm)
  git             # buildkit's git source and `go` VCS stamping
  pigz            # optional, buildkitd uses it for faster (de)compression
)

log() { printf '[install-deps] %s\n' "$*" >&2; }
die() { printf '[install-deps] error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$DEPS/bin"
export PATH="$DEPS/bin:$PATH"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot apt-get install"
  SUDO=(sudo)
fi

# ---------------------------------------------------------------- apt packages
install_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "apt packages: all present"
    return
  fi
  log "apt packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ------------------------------------------------------------------- buildkit
find_go() {
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return; fi
  die "Go toolchain not found (need go >= 1.24 on PATH or at /usr/local/go/bin/go)"
}

# prints the version the installed binaries report, or nothing
installed_buildkit_version() {
  local a b
  a="$("$DEPS/bin/buildkitd" --version 2>/dev/null | awk '{print $3}')" || true
  b="$("$DEPS/bin/buildctl" --version 2>/dev/null | awk '{print $3}')" || true
  if [ -n "$a" ] && [ "$a" = "$b" ]; then echo "$a"; fi
}

# build_buildkit VERSION: builds buildkitd and buildctl into $DEPS/bin (atomically)
build_buildkit() {
  local tmp rc=0
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/buildkit-build.XXXXXX")"
  _build_buildkit "$1" "$tmp" || rc=$?
  chmod -R u+w "$tmp" 2>/dev/null || true
  rm -rf "$tmp"
  return "$rc"
}

_build_buildkit() {
  local ver="$1" tmp="$2" go json dir rev start
  go="$(find_go)"
  start=$SECONDS
  log "buildkit $ver: downloading module"
  # `go install pkg@ver` refuses modules with replace/exclude directives
  # (buildkit >= v0.19 has an exclude block): download and build in a copy.
  if ! json="$(cd "$tmp" && GOFLAGS=-mod=mod "$go" mod download -json "$BUILDKIT_MODULE@$ver")"; then
    log "buildkit $ver: go mod download failed: $json"
    return 1
  fi
  dir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)"
  rev="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]*\)",\{0,1\}$/\1/p' | head -n1)"
  [ -n "$dir" ] && [ -d "$dir" ] || { log "buildkit $ver: no module dir in: $json"; return 1; }
  cp -R "$dir" "$tmp/src"
  chmod -R u+w "$tmp/src"
  mkdir -p "$tmp/out"
  log "buildkit $ver: building buildkitd and buildctl (takes a few minutes on a cold cache)"
  if ! (cd "$tmp/src" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" build -trimpath \
        -tags "$BUILDKIT_TAGS" \
        -ldflags "-X $BUILDKIT_MODULE/version.Version=$ver -X $BUILDKIT_MODULE/version.Revision=$rev" \
        -o "$tmp/out/" ./cmd/buildkitd ./cmd/buildctl) >"$tmp/build.log" 2>&1; then
    log "buildkit $ver: build failed; last lines of the build log:"
    tail -n 30 "$tmp/build.log" >&2
    return 1
  fi
  "$tmp/out/buildkitd" --version >/dev/null && "$tmp/out/buildctl" --version >/dev/null ||
    { log "buildkit $ver: built binaries do not run"; return 1; }
  mv -f "$tmp/out/buildkitd" "$DEPS/bin/buildkitd.new"
  mv -f "$tmp/out/buildctl" "$DEPS/bin/buildctl.new"
  mv -f "$DEPS/bin/buildkitd.new" "$DEPS/bin/buildkitd"
  mv -f "$DEPS/bin/buildctl.new" "$DEPS/bin/buildctl"
  log "buildkit $ver: built in $((SECONDS - start)) s"
}

install_buildkit() {
  local have marker="$DEPS/buildkit.fallback" v tried=0
  have="$(installed_buildkit_version)"
  if [ "$have" = "$BUILDKIT_VERSION" ]; then
    log "buildkit: $have already installed"
    return
  fi
  # A previous run could not build $BUILDKIT_VERSION and installed a fallback:
  # keep it instead of retrying a failing multi-minute build on every run.
  if [ -n "$have" ] && [ -f "$marker" ] && [ "$(sed -n 1p "$marker")" = "$BUILDKIT_VERSION $have" ]; then
    log "buildkit: using fallback $have ($BUILDKIT_VERSION did not build earlier; rm $marker to retry)"
    return
  fi
  if build_buildkit "$BUILDKIT_VERSION"; then
    rm -f "$marker"
    return
  fi
  log "buildkit: $BUILDKIT_VERSION did not build; trying the newest versions that do"
  for v in $(GOFLAGS=-mod=mod "$(find_go)" list -m -versions "$BUILDKIT_MODULE@latest" 2>/dev/null |
             tr ' ' '\n' | grep -E '^v[0-9]+\.[0-9]+\.[0-9]+$' | sort -rV); do
    [ "$v" = "$BUILDKIT_VERSION" ] && continue
    [ "$tried" -ge "$BUILDKIT_FALLBACK_TRIES" ] && break
    tried=$((tried + 1))
    if build_buildkit "$v"; then
      echo "$BUILDKIT_VERSION $v" >"$marker"
      log "buildkit: WARNING: installed fallback $v because $BUILDKIT_VERSION failed to build (see log above)"
      return
    fi
  done
  die "buildkit: neither $BUILDKIT_VERSION nor $tried fallback versions could be built"
}

# ---------------------------------------------------------------- node modules
install_node_modules() {
  if [ "${BUILDER_SHIM_SKIP_NPM:-}" = 1 ]; then log "node_modules: skipped"; return; fi
  command -v npm >/dev/null 2>&1 || die "npm not found"
  cd "$REPO"
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    log "node_modules: npm ci"
    npm ci --no-audit --no-fund --loglevel=error
  else
    log "node_modules: up to date"
  fi
  # npm may skip dependency install scripts (esbuild's postinstall). esbuild
  # works without it as long as its platform package (@esbuild/<os>-<arch>)
  # was installed; check, and run the install script by hand if not.
  if ! node -e "require('esbuild').transformSync('let a: number = 1', {loader: 'ts'})" >/dev/null 2>&1; then
    log "node_modules: esbuild does not work; running its install script"
    (cd node_modules/esbuild && node install.js)
    node -e "require('esbuild').transformSync('let a: number = 1', {loader: 'ts'})" ||
      die "esbuild still does not work"
  fi
}

# ---------------------------------------------------------------------- report
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo missing; }

report() {
  local vitest note=""
  if [ -f "$DEPS/buildkit.fallback" ]; then note="  FALLBACK: $BUILDKIT_VERSION did not build"; fi
  vitest="$(cd "$REPO" && node -p "require('./node_modules/vitest/package.json').version" 2>/dev/null || echo missing)"
  echo "buildkitd        $("$DEPS/bin/buildkitd" --version | awk '{print $3}')  ($DEPS/bin/buildkitd)$note"
  echo "buildctl         $("$DEPS/bin/buildctl" --version | awk '{print $3}')  ($DEPS/bin/buildctl)$note"
  echo "runc             $(runc --version | awk 'NR==1{print $3}')  ($(command -v runc))"
  echo "docker-registry  $(pkg_version docker-registry)  (/usr/bin/docker-registry)"
  echo "skopeo           $(skopeo --version | awk '{print $3}')"
  echo "umoci            $(umoci --version | awk '{print $3}')"
  echo "busybox-static   $(pkg_version busybox-static)"
  echo "ca-certificates  $(pkg_version ca-certificates)"
  echo "git              $(pkg_version git)"
  echo "pigz             $(pkg_version pigz)"
  echo "go               $("$(find_go)" env GOVERSION)"
  echo "node             $(node --version)"
  echo "npm              $(npm --version)"
  echo "vitest           $vitest"
}

install_apt
install_buildkit
install_node_modules
report
