#!/usr/bin/env bash
# bench_cluster.sh — broadcast and round_robin of int64 from a leader to a cluster of N workers,
# next to the Process->Process stream and Open MPI's MPI_Bcast, all in the same run.
#
#   BUILD=./build N=4 REPS=3 scripts/bench_cluster.sh
#
# Prints medians over REPS repetitions (interleaved) and the ratios the issue asks for:
#   broadcast, elements/s per member            vs  P->P elements/s        (bar >= 0.5x)
#   round_robin, elements/s in total            vs  P->P elements/s        (bar >= 0.7x)
#   broadcast, elements/s per member            vs  MPI_Bcast per element  (bar >= 10x)
#   broadcast, payload bytes/s per member       vs  MPI_Bcast of 64 KiB    (bar >= 1x)
# MPI_BCAST=path picks another mpi_bcast binary (one built against the machine's own MPI), and
# MPIRUN_FLAGS replaces the default mpirun flags (--oversubscribe, and --allow-run-as-root as root).
# Every job runs N+1 processes (P->P runs 2). On a machine with fewer cores than processes the
# members share cores, which the per-member rates show.
set -u -o pipefail

BUILD=${BUILD:-./build}
N=${N:-4}
REPS=${REPS:-3}
COUNT=${COUNT:-20000000}
TRANSPORT=${TRANSPORT:-shm}
RUN="$BUILD/transport/sluice-run"
TP="$BUILD/bench/sluice_throughput"
CT="$BUILD/bench/sluice_cluster_throughput"
MPI=${MPI_BCAST:-$BUILD/bench/mpi_bcast}
for b in "$RUN" "$TP" "$CT"; do
  [[ -x $b ]] || { echo "bench_cluster: $b not found (build the bench targets)" >&2; exit 2; }
done
have_mpi=0
if [[ -x $MPI ]] && command -v mpirun >/dev/null; then have_mpi=1; fi
if [[ -n ${MPIRUN_FLAGS+x} ]]; then
  read -r -a mpirun_flags <<<"$MPIRUN_FLAGS"  # another MPI's launcher may not take Open MPI's flags
else
  mpirun_flags=(--oversubscribe)
  [[ $(id -u) == 0 ]] && mpirun_flags+=(--allow-run-as-root)
fi

median() { sort -g | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "nan"}'; }
p2p=() bc=() rr=() me=() mb=()
for ((rep = 0; rep < REPS; ++rep)); do
  out=$("$RUN" -n p1=1 -n p2=1 -- "$TP" --type int64 --count "$COUNT" \
        --sluice-transport "$TRANSPORT" 2>&1) || { echo "$out" >&2; exit 1; }
  p2p+=("$(sed -n 's/.*elements_per_s=\([^ ]*\).*/\1/p' <<<"$out" | head -1)")
  out=$("$RUN" -n leader=1 -n workers="$N" -- "$CT" --pattern broadcast --count "$COUNT" \
        --sluice-transport "$TRANSPORT" 2>&1) || { echo "$out" >&2; exit 1; }
  # per member: the slowest member's rate (what every member got)
  bc+=("$(sed -n 's/.*elements_per_s=\([^ ]*\).*/\1/p' <<<"$out" | sort -g | head -1)")
  out=$("$RUN" -n leader=1 -n workers="$N" -- "$CT" --pattern round_robin --count "$COUNT" \
        --sluice-transport "$TRANSPORT" 2>&1) || { echo "$out" >&2; exit 1; }
  # in total: all elements over the longest member stream
  rr+=("$(awk -v c="$COUNT" '/RESULT/ {for (i = 1; i <= NF; ++i) if ($i ~ /^seconds=/) {split($i, a, "="); if (a[2] > m) m = a[2]}} END {print c / m}' <<<"$out")")
  if ((have_mpi)); then
    out=$(mpirun "${mpirun_flags[@]}" -np $((N + 1)) "$MPI" --mode element --count 200000 2>&1) || echo "$out" >&2
    me+=("$(sed -n 's/.*elements_per_s=\([^ ]*\).*/\1/p' <<<"$out" | head -1)")
    out=$(mpirun "${mpirun_flags[@]}" -np $((N + 1)) "$MPI" --mode buffer --size 65536 --count 5000 2>&1) || echo "$out" >&2
    mb+=("$(sed -n 's/.*bytes_per_s=\([^ ]*\).*/\1/p' <<<"$out" | head -1)")
  fi
done
P=$(printf '%s\n' "${p2p[@]}" | median)
B=$(printf '%s\n' "${bc[@]}" | median)
R=$(printf '%s\n' "${rr[@]}" | median)
echo "cluster of $N over $TRANSPORT, $COUNT int64, medians of $REPS ($(nproc) cores)"
awk -v p="$P" -v b="$B" -v r="$R" 'BEGIN {
  printf "%-44s %12.4g\n", "P->P elements/s", p
  printf "%-44s %12.4g  %5.2fx P->P (bar 0.5x)\n", "broadcast elements/s per member", b, b / p
  printf "%-44s %12.4g  %5.2fx P->P (bar 0.7x)\n", "round_robin elements/s in total", r, r / p }'
if ((have_mpi)); then
  E=$(printf '%s\n' "${me[@]}" | median)
  Y=$(printf '%s\n' "${mb[@]}" | median)
  awk -v b="$B" -v e="$E" -v y="$Y" 'BEGIN {
    printf "%-44s %12.4g  broadcast %6.1fx (bar 10x)\n", "MPI_Bcast per element, elements/s", e, b / e
    printf "%-44s %12.4g  broadcast %6.2fx (bar 1x)\n", "MPI_Bcast of 64 KiB, bytes/s", y, b * 8 / y }'
else
  echo "(no mpirun or mpi_bcast: MPI rows skipped)"
fi
