#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (layering check included),
# then the same tests again under AddressSanitizer + UndefinedBehaviorSanitizer
# (SANITIZE=0 skips that second pass).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
(cd "$build" && ctest --output-on-failure -j "$(nproc 2>/dev/null || echo 2)" --timeout 600)
if [ "${SANITIZE:-1}" != "0" ]; then
  echo "== the same tests under ASan + UBSan"
  "$root/scripts/test_sanitizers.sh"
fi
