#!/usr/bin/env bash
# Configures and builds sluice into ${BUILD:-build}. Extra arguments go to cmake's configure step.
# In CI (CI=true) warnings are errors.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
werror=OFF
if [ "${CI:-}" = "true" ]; then werror=ON; fi
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} \
  -DSLUICE_WERROR=$werror "$@" >/dev/null
cmake --build "$build" -j "$jobs"
