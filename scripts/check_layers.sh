#!/usr/bin/env bash
# Fails when a file includes across a layer boundary (STYLE.md):
#   transport/ must not use TBB or operators/ headers;
#   operators' typed API and IR headers must use neither UCX nor TBB.
set -u
root=${1:-$(dirname "$0")/..}
cd "$root" || exit 2
fail=0
check() {  # check DESCRIPTION PATTERN FILES...
  local what=$1 pattern=$2
  shift 2
  local hits
  hits=$(grep -nE "$pattern" "$@" 2>/dev/null)
  if [ -n "$hits" ]; then
    echo "layer violation: $what"
    echo "$hits"
    fail=1
  fi
}
check "transport/ includes TBB or operators headers" \
  '#include\s*[<"](tbb/|oneapi/tbb|sluice/(flow|ir|codec|run|sluice)\.hpp)' \
  $(find transport -name '*.hpp' -o -name '*.cpp' -o -name '*.h')
check "operators/include (typed API, IR) includes UCX or TBB" \
  '#include\s*[<"](ucp/|uct/|ucs/|tbb/|oneapi/tbb)' \
  $(find operators/include -name '*.hpp')
check "a public header includes a private src/ header" \
  '#include\s*"[^"]*src/' \
  $(find transport/include operators/include -name '*.hpp')
if [ $fail -eq 0 ]; then echo "layers: ok"; fi
exit $fail
