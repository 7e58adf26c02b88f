/* mpi_bcast: the Open MPI peer for scripts/bench_cluster.sh. Rank 0 broadcasts to every rank.
 *
 *   mpirun -np 5 ./mpi_bcast --mode element --count 200000    # MPI_Bcast of one int64 per call
 *   mpirun -np 5 ./mpi_bcast --mode buffer --size 65536 --count 20000   # 64 KiB per call
 *
 * Each non-root rank checks what it receives (element mode: 0, 1, 2, ...; buffer mode: the
 * first and last int64 of buffer i are i) and reports its rate; rank 0 prints the minimum over
 * ranks (the rate every member got):
 *
 *   RESULT mpi mode=element count=N seconds=S elements_per_s=E bytes_per_s=B
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const char* mode = "element";
  long long count = 200000;
  long long bytes = 8;
  for (int i = 1; i + 1 < argc; ++i) {
    if (strcmp(argv[i], "--mode") == 0) mode = argv[i + 1];
    if (strcmp(argv[i], "--count") == 0) count = atoll(argv[i + 1]);
    if (strcmp(argv[i], "--size") == 0) bytes = atoll(argv[i + 1]);
  }
  int element = strcmp(mode, "element") == 0;
  if (element) bytes = 8;
  int64_t* buf = (int64_t*)calloc((size_t)bytes / 8 + 1, 8);
  long long errors = 0;
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  for (long long i = 0; i < count; ++i) {
    if (rank == 0) {
      buf[0] = i;
      buf[bytes / 8 - 1] = i;
    }
    MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rank != 0 && (buf[0] != i || buf[bytes / 8 - 1] != i)) ++errors;
  }
  double seconds = MPI_Wtime() - t0;
  double rate = rank == 0 ? 1e300 : (double)count / seconds;
  double min_rate = 0;
  long long total_errors = 0;
  MPI_Reduce(&rate, &min_rate, 1, MPI_DOUBLE, MPI_MIN, 0, MPI_COMM_WORLD);
  MPI_Reduce(&errors, &total_errors, 1, MPI_LONG_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    printf("RESULT mpi mode=%s ranks=%d count=%lld size=%lld elements_per_s=%.6g bytes_per_s=%.6g\n",
           mode, size, count, bytes, min_rate, min_rate * (double)bytes);
    if (total_errors != 0) fprintf(stderr, "mpi_bcast: %lld wrong buffers\n", total_errors);
  }
  free(buf);
  MPI_Finalize();
  return total_errors != 0;
}
