#!/usr/bin/env bash
# Builds the tests with AddressSanitizer + UndefinedBehaviorSanitizer into ${ASAN_BUILD:-build-asan}
# and the transport tests with ThreadSanitizer into ${TSAN_BUILD:-build-tsan},
# and runs them. Any report fails the run. (vptr checks are off: oneTBB's flow graph trips them
# without being wrong; LeakSanitizer is off: UCX keeps process-lifetime allocations.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${ASAN_BUILD:-$root/build-asan}
flags="-fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
werror=OFF
if [ "${CI:-}" = "true" ]; then werror=ON; fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DSLUICE_BUILD_BENCH=OFF \
  -DSLUICE_WERROR=$werror -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)"
cd "$build"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --output-on-failure -j "$(nproc 2>/dev/null || echo 2)" --timeout 900

# ThreadSanitizer over the transport tests (the node's threads, locks and handshakes). UCX's
# memory hooks intercept madvise/mmap in a way TSan's runtime cannot survive, so they are off
# here; UCX itself is not instrumented, our code around it is. Any report fails (exit 66).
tsan=${TSAN_BUILD:-$root/build-tsan}
cmake -S "$root" -B "$tsan" -DCMAKE_BUILD_TYPE=Debug -DSLUICE_BUILD_BENCH=OFF \
  -DSLUICE_BUILD_EXAMPLES=ON -DSLUICE_WERROR=$werror \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" >/dev/null
cmake --build "$tsan" -j "$(nproc 2>/dev/null || echo 2)" --target node_test frame_test shared_segment_test
export UCX_MEM_EVENTS=no UCX_MEM_MMAP_HOOK_MODE=none UCX_MEM_MALLOC_HOOKS=no
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
echo "== transport tests under TSan"
"$tsan/tests/frame_test" --gtest_brief=1
"$tsan/tests/shared_segment_test" --gtest_brief=1
"$tsan/tests/node_test" --gtest_brief=1
