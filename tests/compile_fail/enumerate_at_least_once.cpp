#include "common.hpp"
void build() {
  FlowBuilder flow;
  ordered_stream(flow).weaker_retries().enumerate();
}
