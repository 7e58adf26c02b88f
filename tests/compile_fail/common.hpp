// What every compile-fail case starts from: a flow with one ordered, exactly-once stream.
#include <vector>

#include "sluice/flow.hpp"

using namespace sluice;
struct P {};

inline auto ordered_stream(FlowBuilder& flow) {
  return flow.process<P>("p").source_iter(std::vector<int>{1, 2, 3});
}
