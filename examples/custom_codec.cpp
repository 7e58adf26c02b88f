// Payload types a user brings: a struct with a std::string member, given a Codec by hand, and a
// FlatBuffers table sent as Flat<Reading>, which the receiver reads in place (verified, never
// unpacked). Runs embedded by default; the same binary runs one process per location under
// `sluice-run -n p1=1 -n p2=1 -- ./custom_codec`.
#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

#include <sluice/sluice.hpp>

#include "custom_codec_generated.h"

using namespace sluice;

// Not trivially copyable (the string), so it needs a codec: the fields in order, each with the
// built-in codec of its type. decode() gets bytes off the network: the built-in codecs check
// every length against what arrived, so a bad frame fails here instead of being read.
struct Order {
  uint64_t id = 0;
  std::string customer;
  double amount = 0;
};

template <>
struct sluice::Codec<Order> {
  static size_t size(const Order& o) { return 8 + Codec<std::string>::size(o.customer) + 8; }
  static uint8_t* encode(const Order& o, uint8_t* out) {
    out = Codec<uint64_t>::encode(o.id, out);
    out = Codec<std::string>::encode(o.customer, out);
    return Codec<double>::encode(o.amount, out);
  }
  static bool decode(Reader& in, Order& o) {
    return Codec<uint64_t>::decode(in, o.id) && Codec<std::string>::decode(in, o.customer) &&
           Codec<double>::decode(in, o.amount);
  }
};

static Flat<example::Reading> make_reading(uint32_t sensor, std::vector<float> samples) {
  flatbuffers::FlatBufferBuilder fbb;
  auto v = fbb.CreateVector(samples);
  auto unit = fbb.CreateString("celsius");
  fbb.Finish(example::CreateReading(fbb, sensor, unit, v));
  return Flat<example::Reading>(std::move(fbb));  // takes the builder's buffer, no copy
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // whole lines under sluice-run (stdout is a pipe)
  FlowBuilder flow;
  auto p1 = flow.process<struct P1>("p1");
  auto p2 = flow.process<struct P2>("p2");

  std::vector<Order> orders{{1, "ada", 12.5}, {2, "grace", 99.0}, {3, "linus", 0.25}};
  p1.source_iter(orders)
      .filter([](const Order& o) { return o.amount > 1.0; })
      .send(p2)
      .for_each([](const Order& o) {
        std::printf("order %" PRIu64 " from %s: %.2f\n", o.id, o.customer.c_str(), o.amount);
      });

  std::vector<Flat<example::Reading>> readings{make_reading(7, {20.5f, 21.0f, 21.5f}),
                                               make_reading(8, {-3.0f, -1.0f})};
  p1.source_iter(readings).send(p2).for_each([](const Flat<example::Reading>& r) {
    float sum = 0;
    for (float s : *r->samples()) sum += s;  // reads the received frame in place
    std::printf("sensor %u: %u samples, mean %.2f %s\n", r->sensor(), r->samples()->size(),
                static_cast<double>(sum / static_cast<float>(r->samples()->size())),
                r->unit()->c_str());
  });
  return run(flow, argc, argv);
}
