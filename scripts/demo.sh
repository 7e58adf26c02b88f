#!/usr/bin/env bash
# Installs what is missing, builds, and runs the demo: embedded first (every location in this
# process), then the same binary as one process per location under sluice-run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
echo
echo "== embedded: $build/examples/hello_send"
"$build/examples/hello_send"
echo
echo "== one process per location: sluice-run -n producer=1 -n consumer=1 -- hello_send --sluice-transport shm"
"$build/transport/sluice-run" -n producer=1 -n consumer=1 -- "$build/examples/hello_send" \
  --sluice-transport shm --sluice-stats
