#!/usr/bin/env bash
# bench_compare.sh — sluice against UCX's own ucx_perftest, measured in the same run, as ratios.
#
#   BUILD=./build REPS=3 scripts/bench_compare.sh
#
# For each repetition (interleaved, so slow drift of a shared machine hits both sides alike):
#   ucx_perftest over shm (UCX_TLS=sm,self) and tcp (UCX_TLS=tcp, UCX_NET_DEVICES=lo), server
#   pinned to core 0 and client to core 1 (-c), final line only (-f):
#     ucp_am_bw -s 8 (shm, tcp), ucp_am_bw -s 65536 and -s 1048576 (shm), ucp_am_lat -s 8 (shm)
#   sluice, two processes under sluice-run, each pinned to its own core (--sluice-bind core):
#     sluice_throughput int64 (shm, tcp); 64 KiB and 1 MiB elements over shm, both as
#     sluice::Bytes (zero-copy both ends) in spin mode — busy-polling like ucx_perftest — and
#     as std::vector<uint8_t> (a fresh vector filled per element by a map) in adaptive mode
#     sluice_latency spin and adaptive (shm)
# and then prints medians [min-max] and the ratios behind the four bars.
#
# Environment: BUILD (build dir, default ./build), REPS (default 3), SLUICE_RUN (launcher, default
# $BUILD/transport/sluice-run; without one sluice runs embedded), KEEP_LOGS=1 keeps raw
# outputs, PT_TIMEOUT / SLUICE_TIMEOUT (seconds per process, default 60 / 120). Exit status: 0
# when every measurement produced a number (whether or not a bar is met), 1 otherwise.
set -u -o pipefail

BUILD=${BUILD:-./build}
REPS=${REPS:-3}
PT_TIMEOUT=${PT_TIMEOUT:-60}
SLUICE_TIMEOUT=${SLUICE_TIMEOUT:-120}
# Sizes: enough for ~1 s per sluice run on a 2-core VM, a fraction of that for ucx_perftest.
INT64_COUNT=${INT64_COUNT:-100000000}
BYTES_TOTAL=${BYTES_TOTAL:-2000000000}  # payload bytes per bytes-run
LAT_ITERS=${LAT_ITERS:-20000}
LAT_MAX_S=${LAT_MAX_S:-3}               # caps the timed part of a latency run

TP="$BUILD/bench/sluice_throughput"
LAT="$BUILD/bench/sluice_latency"
RUN=${SLUICE_RUN:-$BUILD/transport/sluice-run}

die() { echo "bench_compare: $*" >&2; exit 2; }
[[ -x $TP ]] || die "$TP not found (build it: make -C $BUILD sluice_throughput sluice_latency)"
[[ -x $LAT ]] || die "$LAT not found"
command -v ucx_perftest >/dev/null || die "ucx_perftest not found (Debian: ucx-utils)"
NCPU=$(nproc)
((NCPU >= 2)) || echo "bench_compare: warning: $NCPU CPU; pinning to cores 0 and 1 is not possible" >&2

LAUNCHER=1
if ! [[ -x $RUN ]] || ! "$RUN" --help >/dev/null 2>&1; then
  LAUNCHER=0
  echo "bench_compare: warning: $RUN is missing or broken; sluice runs embedded (two members as" \
       "threads of one unpinned process) — not comparable to two pinned ucx_perftest processes" >&2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench_compare.XXXXXX")
PIDS=()
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      kill "$p" 2>/dev/null
      wait "$p" 2>/dev/null
    fi
  done
  if [[ ${KEEP_LOGS:-0} == 1 ]]; then
    echo "bench_compare: raw outputs kept in $TMP" >&2
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

FAILED=0
note_fail() {
  FAILED=1
  echo "bench_compare: $1 failed; output:" >&2
  sed 's/^/    /' "$2" | tail -20 >&2
}

# True once something listens on TCP port $1 (without connecting: ucx_perftest's server takes the
# first connection it accepts as its client).
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# perftest shm|tcp ARGS... -> writes the client's final line to $TMP/pt_line: iterations, then
# latency or overhead in us (50%ile, average, overall), bandwidth in MiB/s (average, overall),
# message rate in msg/s (average, overall). Runs in this shell (not $(...)) so that the server's
# pid reaches the cleanup trap.
perftest() {
  local kind=$1
  shift
  local -a envs
  if [[ $kind == shm ]]; then
    envs=("UCX_TLS=sm,self")
  else
    envs=(UCX_TLS=tcp UCX_NET_DEVICES=lo)
  fi
  local port spid i line
  for _ in 1 2 3 4 5; do  # a new random port each try
    port=$((20000 + RANDOM % 20000))
    env "${envs[@]}" timeout "$PT_TIMEOUT" ucx_perftest -p "$port" -c 0 >"$TMP/pt_srv.log" 2>&1 &
    spid=$!
    PIDS+=("$spid")
    for ((i = 0; i < 100; i++)); do
      listening "$port" && break
      kill -0 "$spid" 2>/dev/null || break
      sleep 0.05
    done
    if listening "$port" &&
       env "${envs[@]}" timeout "$PT_TIMEOUT" ucx_perftest 127.0.0.1 -p "$port" -c 1 "$@" -f \
         >"$TMP/pt_cli.log" 2>&1; then
      wait "$spid" 2>/dev/null
      line=$(awk 'NF == 8 && $1 ~ /^[0-9]+$/ { l = $0 } END { print l }' "$TMP/pt_cli.log")
      if [[ -n $line ]]; then
        echo "$line" >"$TMP/pt_line"
        return 0
      fi
    fi
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
  done
  note_fail "ucx_perftest ($kind $*)" "$TMP/pt_cli.log"
  return 1
}

# sluice_job PROGRAM ARGS... : both members under sluice-run (pinned), or embedded.
sluice_job() {
  local prog=$1
  shift
  if ((LAUNCHER)); then
    timeout "$SLUICE_TIMEOUT" "$RUN" --timeout-s "$SLUICE_TIMEOUT" -n p1=1 -n p2=1 -- \
      "$prog" "$@" --sluice-bind core
  else
    timeout "$SLUICE_TIMEOUT" "$prog" "$@"
  fi
}

# Prints the value of KEY=... from the RESULT line of file $2.
result_field() { grep -o "RESULT .*" "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | tail -1; }

# tp NAME TRANSPORT TYPE SIZE COUNT FIELD -> appends the figure to results/NAME.
# sluice_throughput checks every element itself and says FAILED when one was missing, wrong or
# out of order. A job that delivered and verified the whole stream but still exited non-zero
# (e.g. a peer reported lost after its clean goodbye) keeps its figure and is counted in WARNED.
WARNED=0
tp() {
  local name=$1 transport=$2 type=$3 size=$4 count=$5 field=$6 v rc
  shift 6  # the rest: extra sluice flags
  sluice_job "$TP" --type "$type" --size "$size" --count "$count" \
    --sluice-transport "$transport" "$@" >"$TMP/run.log" 2>&1
  rc=$?
  v=$(result_field "$field" "$TMP/run.log")
  if [[ -z $v ]] || grep -q "FAILED" "$TMP/run.log" ||
     [[ $(result_field count "$TMP/run.log") != "$count" ]]; then
    note_fail "sluice_throughput ($name, exit $rc)" "$TMP/run.log"
    return
  fi
  echo "$v" >>"$TMP/results.$name"
  if ((rc != 0)); then
    WARNED=$((WARNED + 1))
    echo "bench_compare: warning: sluice_throughput ($name) verified all $count elements but" \
         "the job exited $rc:" >&2
    grep -v "RESULT" "$TMP/run.log" | tail -5 | sed 's/^/    /' >&2
  fi
}

lat() {
  local name=$1 progress=$2 v
  local warm=$((LAT_ITERS / 10))
  if sluice_job "$LAT" --iters "$LAT_ITERS" --warmup "$warm" --max-seconds "$LAT_MAX_S" \
       --sluice-transport shm --sluice-progress "$progress" >"$TMP/run.log" 2>&1 &&
     v=$(result_field median_us "$TMP/run.log") && [[ -n $v ]]; then
    echo "$v" >>"$TMP/results.$name"
    result_field iters "$TMP/run.log" >>"$TMP/results.$name.iters"
  else
    note_fail "sluice_latency ($name)" "$TMP/run.log"
  fi
}

# pt NAME kind COLUMN SCALE ARGS... -> appends column COLUMN of the final line times SCALE
pt() {
  local name=$1 kind=$2 col=$3 scale=$4
  shift 4
  if perftest "$kind" "$@"; then
    awk -v c="$col" -v s="$scale" '{ printf "%.6g\n", $c * s }' "$TMP/pt_line" >>"$TMP/results.$name"
  fi
}

MIB_TO_GB=$(awk 'BEGIN { printf "%.9f", 1048576 / 1e9 }')  # ucx_perftest's MB/s are MiB/s
B64K_COUNT=$((BYTES_TOTAL / 65536))
B1M_COUNT=$((BYTES_TOTAL / 1048576))

echo "bench_compare: $REPS interleaved repetitions; build $BUILD; $(nproc) CPUs;" \
     "$(ucx_info -v 2>/dev/null | sed -n 's/^# \(Version .*\)/UCX \1/p')"
echo "bench_compare: sluice via $( ((LAUNCHER)) && echo 'sluice-run, --sluice-bind core' || echo embedded);" \
     "ucx_perftest server -c 0, client -c 1"
start=$SECONDS
for ((rep = 1; rep <= REPS; rep++)); do
  echo "  repetition $rep/$REPS ..." >&2
  # ucx_perftest (column 8: overall msg/s; 6: overall MiB/s; 2: latency 50%ile in us)
  pt pt_shm_rate8 shm 8 1e-6 -t ucp_am_bw -s 8 -n 2000000
  pt pt_shm_bw64k shm 6 "$MIB_TO_GB" -t ucp_am_bw -s 65536 -n 20000 -w 1000
  pt pt_shm_bw1m shm 6 "$MIB_TO_GB" -t ucp_am_bw -s 1048576 -n 2000 -w 100
  pt pt_tcp_rate8 tcp 8 1e-6 -t ucp_am_bw -s 8 -n 200000 -w 10000
  pt pt_shm_lat8 shm 2 1 -t ucp_am_lat -s 8 -n 100000 -w 10000
  # sluice
  tp s_shm_int64 shm int64 8 "$INT64_COUNT" elements_per_s
  tp s_shm_s64k shm shared 65536 "$B64K_COUNT" gbytes_per_s --sluice-progress=spin
  tp s_shm_s1m shm shared 1048576 "$B1M_COUNT" gbytes_per_s --sluice-progress=spin
  tp s_shm_b64k shm bytes 65536 "$B64K_COUNT" gbytes_per_s
  tp s_shm_b1m shm bytes 1048576 "$B1M_COUNT" gbytes_per_s
  tp s_tcp_int64 tcp int64 8 "$INT64_COUNT" elements_per_s
  lat s_lat_spin spin
  lat s_lat_adaptive adaptive
done
for f in "$TMP"/results.s_*_int64; do  # elements/s -> M elements/s
  [[ -f $f ]] && awk '{ printf "%.6g\n", $1 / 1e6 }' "$f" >"$f.tmp" && mv "$f.tmp" "$f"
done

# summary NAME -> "median min max" (or "nan nan nan")
summary() {
  local f="$TMP/results.$1"
  if [[ -s $f ]]; then
    sort -g "$f" | awk '{ v[NR] = $1 } END {
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%g %g %g\n", m, v[1], v[NR] }'
  else
    echo "nan nan nan"
  fi
}
fmt() { awk -v m="$1" -v lo="$2" -v hi="$3" 'BEGIN {
  if (m == "nan") { printf "%-22s", "n/a"; exit }
  printf "%-22s", sprintf("%.4g [%.3g-%.3g]", m, lo, hi) }'; }

# row LABEL OURS PEER BAR-OP BAR-VALUE
row() {
  local label=$1 ours=$2 peer=$3 op=$4 bar=$5
  read -r om olo ohi <<<"$(summary "$ours")"
  if [[ $peer == - ]]; then
    pm=nan; plo=nan; phi=nan
  else
    read -r pm plo phi <<<"$(summary "$peer")"
  fi
  printf "%-48s %s %s " "$label" "$(fmt "$om" "$olo" "$ohi")" "$(fmt "$pm" "$plo" "$phi")"
  awk -v o="$om" -v p="$pm" -v op="$op" -v b="$bar" 'BEGIN {
    if (o == "nan" || p == "nan" || p == 0) { printf "%-9s %-8s %s\n", "n/a", (op == "-" ? "" : op b "x"), (op == "-" ? "(info)" : "n/a"); exit }
    r = o / p
    verdict = "(info)"
    if (op == ">=") verdict = (r >= b) ? "PASS" : "FAIL"
    if (op == "<=") verdict = (r <= b) ? "PASS" : "FAIL"
    printf "%-9s %-8s %s\n", sprintf("%.3gx", r), (op == "-" ? "" : op b "x"), verdict }'
}

echo
echo "Results after $((SECONDS - start)) s: median [min-max] of $REPS runs each."
printf "%-48s %-22s %-22s %-9s %-8s %s\n" "measure (unit)" "sluice" "ucx_perftest" "ratio" "bar" "verdict"
printf '%.0s-' {1..122}
echo
row "int64 shm rate (M elem/s | am_bw -s 8 M msg/s)" s_shm_int64 pt_shm_rate8 ">=" 10
row "1 MiB shm, Bytes spin (GB/s | am_bw -s 1048576)" s_shm_s1m pt_shm_bw1m ">=" 0.8
row "int64 tcp rate (M elem/s | am_bw -s 8 tcp)" s_tcp_int64 pt_tcp_rate8 ">=" 100
row "one-way latency shm, spin (us | am_lat -s 8)" s_lat_spin pt_shm_lat8 "<=" 10
row "one-way latency shm, adaptive (us | am_lat)" s_lat_adaptive pt_shm_lat8 "-" ""
row "64 KiB shm, Bytes spin (GB/s | am_bw -s 65536)" s_shm_s64k pt_shm_bw64k "-" ""
row "1 MiB shm, vector adaptive (GB/s | am_bw)" s_shm_b1m pt_shm_bw1m "-" ""
row "64 KiB shm, vector adaptive (GB/s | am_bw)" s_shm_b64k pt_shm_bw64k "-" ""
echo
if [[ -s $TMP/results.s_lat_spin.iters ]]; then
  echo "latency rounds timed per run: spin $(paste -sd, "$TMP/results.s_lat_spin.iters")," \
       "adaptive $(paste -sd, "$TMP/results.s_lat_adaptive.iters" 2>/dev/null)" \
       "(a run stops after ${LAT_MAX_S} s of timed rounds)"
fi
if ((WARNED)); then
  echo "WARNING: $WARNED sluice_throughput job(s) delivered and verified every element but exited" \
       "non-zero (details on stderr above); their figures are included."
fi
cat <<'EOF'
How to read: ratio = sluice / ucx_perftest, both measured above in this run (the machine is shared
and drifts 2-3x between runs, so only same-run ratios mean anything).
  - rates and GB/s: higher is better; sluice counts elements of a Process->Process stream (one
    element = one int64, or one byte payload of the size shown), the peer counts active
    messages. "Bytes": sluice::Bytes the sender already holds, sent from its own memory and
    read in the frame at the receiver (one copy in all, like the peer's). "vector": a fresh
    std::vector<uint8_t> made and filled by a map per element, copied into the frame and out
    again into a new vector at the receiver. GB = 1e9 bytes of payload; ucx_perftest's MB/s are
    MiB/s and are converted.
  - latency: lower is better; both are RTT/2 medians of one 8-byte message/element ping-pong
    (sluice_latency works at the transport level: one int64 element per data frame).
  - bars: int64 shm rate >= 10x, 1 MiB shm >= 0.8x (Bytes, spin: busy-polling like the peer),
    int64 tcp rate >= 100x, spin latency <= 10x.
EOF
exit "$FAILED"
