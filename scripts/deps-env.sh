# Source this (`. scripts/deps-env.sh`) to use the dependencies that
# scripts/install-deps.sh installed: exports BUILDER_SHIM_DEPS and puts
# $BUILDER_SHIM_DEPS/bin first on PATH.
export BUILDER_SHIM_DEPS="${BUILDER_SHIM_DEPS:-${XDG_CACHE_HOME:-$HOME/.cache}/builder-shim/deps}"
case ":${PATH}:" in
  *":${BUILDER_SHIM_DEPS}/bin:"*) ;;
  *) export PATH="${BUILDER_SHIM_DEPS}/bin:${PATH}" ;;
esac
