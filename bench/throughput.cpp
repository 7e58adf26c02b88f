// sluice_throughput: end-to-end throughput of one Process -> Process stream.
//
//   ./sluice_throughput --type int64 --count 50000000                       # embedded
//   sluice-run -n p1=1 -n p2=1 -- ./sluice_throughput --type bytes --size 1048576
//       --count 4000 --sluice-transport shm --sluice-bind core              # two processes
//
// p1 yields the indices 0..N-1 lazily (std::views::iota); for `--type bytes` a map turns index i
// into a std::vector<uint8_t> of `--size` bytes filled with (uint8_t)i — that allocation and fill
// run on the sender inside the measured window, exactly as a user's map would. p2 checks every
// element (int64: value == index; bytes: size, first and last byte) and times the stream from the
// first element to the last. It prints one line
//
//   RESULT type=int64 size=8 count=N seconds=S elements_per_s=E gbytes_per_s=G
//
// With `--type shared` the elements are sluice::Bytes taken from 8 buffers the sender already
// holds (no fill per element), and the receiver reads them in the frames they arrived in.
//
// (G counts element payload only, 1 GB = 1e9 bytes) and exits 1 when an element was missing,
// out of order or malformed. Flags of the program itself are read before run(), which strips the
// --sluice-* ones; the rest of argv is left as it is.
#include <sluice/sluice.hpp>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ranges>
#include <string>
#include <vector>

namespace {

struct P1 {};
struct P2 {};

struct Options {
  bool bytes = false;
  bool shared = false;  // sluice::Bytes (zero-copy at the receiver) instead of std::vector
  size_t size = 8;
  int64_t count = 20'000'000;
};

// Everything the receiving member observes. Touched only by p2's sink (a serial TBB node).
struct Checker {
  int64_t seen = 0;
  int64_t errors = 0;
  int64_t expected = 0;
  std::chrono::steady_clock::time_point first, last;
  bool got_last = false;

  // Reads the clock only at the first and the last expected element: a clock read per element
  // would cost as much as the transport does per int64.
  void mark() {
    if (seen == 0) first = std::chrono::steady_clock::now();
    if (seen + 1 == expected) {
      last = std::chrono::steady_clock::now();
      got_last = true;
    }
  }
  void bad(const char* what, int64_t got) {
    if (errors++ < 5) {
      std::fprintf(stderr, "sluice_throughput: element %" PRId64 ": %s (got %" PRId64 ")\n", seen,
                   what, got);
    }
  }
};

Checker g_check;

void usage(const char* prog) {
  std::fprintf(
      stderr, "usage: %s [--type int64|bytes|shared] [--size BYTES] [--count N] [--sluice-* ...]\n",
      prog);
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "sluice_throughput: %s needs a value\n", name);
        return nullptr;
      }
      return argv[++i];
    };
    if (a.rfind("--sluice-", 0) == 0) {
      // run() parses these; skip a separate value ("--sluice-x v") if there is one.
      if (a.find('=') == std::string::npos && i + 1 < argc && argv[i + 1][0] != '-') ++i;
      continue;
    }
    if (a == "--type") {
      const char* v = value("--type");
      if (v == nullptr) return false;
      if (std::strcmp(v, "int64") == 0) {
        o.bytes = false;
      } else if (std::strcmp(v, "bytes") == 0) {
        o.bytes = true;
      } else if (std::strcmp(v, "shared") == 0) {
        o.bytes = true;
        o.shared = true;
      } else {
        std::fprintf(stderr,
                     "sluice_throughput: --type: expected int64, bytes or shared, got '%s'\n", v);
        return false;
      }
    } else if (a == "--size" || a == "--count") {
      const char* v = value(a.c_str());
      if (v == nullptr) return false;
      char* end = nullptr;
      long long n = std::strtoll(v, &end, 10);
      if (*end != '\0' || n < 1) {
        std::fprintf(stderr, "sluice_throughput: %s: expected a positive integer, got '%s'\n",
                     a.c_str(), v);
        return false;
      }
      if (a == "--size") {
        o.size = static_cast<size_t>(n);
      } else {
        o.count = n;
      }
    } else if (a == "-h" || a == "--help") {
      usage(argv[0]);
      std::exit(0);
    } else {
      std::fprintf(stderr, "sluice_throughput: unknown argument '%s'\n", a.c_str());
      usage(argv[0]);
      return false;
    }
  }
  if (!o.bytes) o.size = sizeof(int64_t);
  return true;
}

// True in the process that hosts p2: the embedded process, or the launcher's p2 member.
bool hosts_receiver() {
  const char* loc = std::getenv("SLUICE_LOCATION");
  return loc == nullptr || std::strcmp(loc, "p2") == 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) return 2;

  sluice::FlowBuilder flow;
  auto p1 = flow.process<P1>("p1");
  auto p2 = flow.process<P2>("p2");
  auto indices = p1.source_iter(std::views::iota(int64_t{0}, o.count));
  if (o.shared) {
    // sluice::Bytes: the sender's data already exists (8 buffers, element i is buffer i % 8, as
    // a user sending from memory it holds), so the map only shares it; the receiver's elements
    // point into the frames they arrived in.
    const size_t size = o.size;
    std::vector<sluice::Bytes> buffers;
    for (int k = 0; k < 8; ++k) {
      buffers.emplace_back(std::vector<uint8_t>(size, static_cast<uint8_t>(k)));
    }
    indices.map([buffers](const int64_t& i) { return buffers[static_cast<size_t>(i % 8)]; })
        .send(p2)
        .for_each([size](const sluice::Bytes& v) {
          Checker& c = g_check;
          c.mark();
          const auto want = static_cast<uint8_t>(c.seen % 8);
          if (v.size() != size) {
            c.bad("wrong size", static_cast<int64_t>(v.size()));
          } else if (v[0] != want || v[size - 1] != want) {
            c.bad("wrong byte pattern", v[0]);
          }
          ++c.seen;
        });
  } else if (o.bytes) {
    const size_t size = o.size;
    indices
        .map([size](const int64_t& i) {
          return std::vector<uint8_t>(size, static_cast<uint8_t>(i));
        })
        .send(p2)
        .for_each([size](const std::vector<uint8_t>& v) {
          Checker& c = g_check;
          c.mark();
          const auto want = static_cast<uint8_t>(c.seen);
          if (v.size() != size) {
            c.bad("wrong size", static_cast<int64_t>(v.size()));
          } else if (v.front() != want || v.back() != want) {
            c.bad("wrong byte pattern", v.front());
          }
          ++c.seen;
        });
  } else {
    indices.send(p2).for_each([](const int64_t& x) {
      Checker& c = g_check;
      c.mark();
      if (x != c.seen) c.bad("expected the next index", x);
      ++c.seen;
    });
  }

  g_check.expected = o.count;
  int rc = sluice::run(flow, argc, argv);
  if (!hosts_receiver()) return rc;

  Checker& c = g_check;
  if (!c.got_last) c.last = std::chrono::steady_clock::now();  // incomplete: reported below
  double seconds = std::chrono::duration<double>(c.last - c.first).count();
  // Elements after the first one over the time from the first to the last.
  double rate = seconds > 0 ? static_cast<double>(c.seen - 1) / seconds : 0.0;
  double gbps = rate * static_cast<double>(o.size) / 1e9;
  std::printf("RESULT type=%s size=%zu count=%" PRId64
              " seconds=%.6f elements_per_s=%.6g "
              "gbytes_per_s=%.6g\n",
              o.shared ? "shared" : (o.bytes ? "bytes" : "int64"), o.size, c.seen, seconds, rate,
              gbps);
  std::fflush(stdout);
  if (c.seen != o.count || c.errors != 0) {
    std::fprintf(stderr,
                 "sluice_throughput: FAILED: received %" PRId64 " of %" PRId64 " elements, %" PRId64
                 " wrong\n",
                 c.seen, o.count, c.errors);
    return rc != 0 ? rc : 1;
  }
  return rc;
}
