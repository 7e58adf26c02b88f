#include "sluice/ir.hpp"

namespace sluice::ir {

uint32_t Graph::add_location(std::string name, LocationKind kind) {
  uint32_t id = static_cast<uint32_t>(locations_.size());
  locations_.push_back(Location{id, std::move(name), kind});
  return id;
}

uint32_t Graph::add_node(Node n) {
  n.id = static_cast<uint32_t>(nodes_.size());
  if (n.kind == NodeKind::kNetwork) n.edge = next_edge_++;
  nodes_.push_back(std::move(n));
  return nodes_.back().id;
}

std::string Graph::dump() const {
  std::string out;
  for (const auto& n : nodes_) {
    out += "n" + std::to_string(n.id) + " " + n.op + " @" + locations_[n.location].name;
    if (n.kind == NodeKind::kNetwork) {
      out += " -> @" + locations_[n.to_location].name + " (edge " + std::to_string(n.edge) + ", " +
             n.codec.type_name + ")";
    }
    if (!n.inputs.empty()) {
      out += " <-";
      for (auto i : n.inputs) out += " n" + std::to_string(i);
    }
    out += "\n";
  }
  return out;
}

}  // namespace sluice::ir
