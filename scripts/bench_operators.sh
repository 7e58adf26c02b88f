#!/usr/bin/env bash
# bench_operators.sh — the operator chain source -> map -> filter -> fold over int64 in one
# location, run through run(), next to a hand-written loop doing the same work in the same binary.
#
#   BUILD=./build scripts/bench_operators.sh
#
# Runs sluice_operator_bench with --benchmark_repetitions=${REPS:-3} and prints the medians
# (elements/s) and the chain's ratio to the hand loop, single-threaded (the bar: >= 0.5x) and with
# 2 threads, plus the data-parallel heavy map with 1 and 2 threads (its scaling).
set -u -o pipefail

BUILD=${BUILD:-./build}
REPS=${REPS:-3}
BIN="$BUILD/bench/sluice_operator_bench"
[[ -x $BIN ]] || { echo "bench_operators: $BIN not found (cmake --build $BUILD --target sluice_operator_bench)" >&2; exit 2; }

csv=$("$BIN" --benchmark_repetitions="$REPS" --benchmark_report_aggregates_only=true \
  --benchmark_format=csv 2>/dev/null) || { echo "bench_operators: $BIN failed" >&2; exit 1; }

# CSV rows: "name",iterations,real_time,cpu_time,time_unit,bytes_per_second,items_per_second,...
echo "$csv" | awk -F, -v reps="$REPS" '
  $1 ~ /_median"$/ {
    name = $1; gsub(/"/, "", name); sub(/\/real_time_median$/, "", name); sub(/^BM_/, "", name)
    ips[name] = $7
  }
  END {
    hand = ips["HandLoop"]
    if (hand == "") { print "bench_operators: no hand-loop median" > "/dev/stderr"; exit 1 }
    printf "medians of %d repetitions, elements/s\n", reps
    printf "%-22s %14s %10s\n", "case", "elements/s", "ratio"
    printf "%-22s %14.3g %10s\n", "HandLoop", hand, "1.00"
    r1 = ips["Chain/threads:1"] / hand; r2 = ips["Chain/threads:2"] / hand
    printf "%-22s %14.3g %9.2fx  (bar >= 0.50x: %s)\n", "Chain/threads:1", ips["Chain/threads:1"], r1, (r1 >= 0.5 ? "ok" : "BELOW BAR")
    printf "%-22s %14.3g %9.2fx\n", "Chain/threads:2", ips["Chain/threads:2"], r2
    h1 = ips["HeavyMap/threads:1"]; h2 = ips["HeavyMap/threads:2"]
    if (h1 > 0) printf "%-22s %14.3g   scaling 1 -> 2 threads: %.2fx\n", "HeavyMap/threads:2", h2, h2 / h1
  }'
