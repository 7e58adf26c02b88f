#!/usr/bin/env bash
# bench_codec.sh — the payload codecs next to memcpy of the same bytes, in one run of one binary.
#
#   BUILD=./build scripts/bench_codec.sh
#
# Runs sluice_codec_bench with --benchmark_repetitions=${REPS:-3} and prints, for 64 KiB
# payloads, the median throughput (GB/s, 1e9 bytes/s) of each codec (Codec<std::vector<int64_t>> and
# Codec<Flat<Payload>>, encode and decode) and its ratio to the median memcpy. The bar is 0.5x
# memcpy. Exit status: 0 when every number was produced (whether or not the bar is met).
set -u -o pipefail

BUILD=${BUILD:-./build}
REPS=${REPS:-3}
SIZE=65536
BIN="$BUILD/bench/sluice_codec_bench"
[[ -x $BIN ]] || { echo "bench_codec: $BIN not found (build it: cmake --build $BUILD --target sluice_codec_bench)" >&2; exit 2; }

csv=$("$BIN" --benchmark_filter="^BM_(Encode/|Decode/|Memcpy/)[A-Za-z0-9/]*$SIZE\$" \
  --benchmark_repetitions="$REPS" --benchmark_report_aggregates_only=true \
  --benchmark_format=csv 2>/dev/null) || { echo "bench_codec: $BIN failed" >&2; exit 1; }

# CSV rows: "name",iterations,real_time,cpu_time,time_unit,bytes_per_second,...
echo "$csv" | awk -F, -v size="$SIZE" -v reps="$REPS" '
  $1 ~ /_median"$/ {
    name = $1; gsub(/"/, "", name); sub("/" size "_median$", "", name); sub(/^BM_/, "", name)
    bps[name] = $6; order[++n] = name
  }
  END {
    if (!("Memcpy" in bps)) { print "bench_codec: no memcpy median" > "/dev/stderr"; exit 1 }
    printf "payload %d bytes, medians of %d repetitions (bar: >= 0.50x memcpy)\n", size, reps
    printf "%-22s %12s %8s\n", "case", "GB/s", "x memcpy"
    for (i = 1; i <= n; ++i) {
      c = order[i]; r = bps[c] / bps["Memcpy"]
      printf "%-22s %12.2f %8.2f%s\n", c, bps[c] / 1e9, r,
             (c == "Memcpy" ? "" : (r >= 0.5 ? "  ok" : "  BELOW BAR"))
    }
  }'
