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

namespace {

// What a node shows: its operator, and for a network edge the edge id.
std::string label(const Node& n) {
  if (n.kind == NodeKind::kNetwork) return n.op + " (edge " + std::to_string(n.edge) + ")";
  return n.op;
}

}  // namespace

std::string Graph::dump_dot() const {
  std::string out = "digraph sluice {\n  rankdir=LR;\n  node [shape=box];\n";
  for (const auto& loc : locations_) {
    out += "  subgraph cluster_" + std::to_string(loc.id) + " {\n    label=\"" + loc.name +
           (loc.kind == LocationKind::kCluster ? " (cluster)" : "") + "\";\n";
    for (const auto& n : nodes_) {
      if (n.location == loc.id) {
        out += "    n" + std::to_string(n.id) + " [label=\"" + label(n) + "\"];\n";
      }
    }
    out += "  }\n";
  }
  for (const auto& n : nodes_) {
    for (uint32_t in : n.inputs) {
      out += "  n" + std::to_string(in) + " -> n" + std::to_string(n.id) + ";\n";
    }
  }
  out += "}\n";
  return out;
}

std::string Graph::dump_mermaid() const {
  std::string out = "flowchart LR\n";
  for (const auto& loc : locations_) {
    out += "  subgraph L" + std::to_string(loc.id) + "[\"" + loc.name + "\"]\n";
    for (const auto& n : nodes_) {
      if (n.location == loc.id) out += "    n" + std::to_string(n.id) + "[\"" + label(n) + "\"]\n";
    }
    out += "  end\n";
  }
  for (const auto& n : nodes_) {
    for (uint32_t in : n.inputs) {
      out += "  n" + std::to_string(in) + " --> n" + std::to_string(n.id) + "\n";
    }
  }
  return out;
}

}  // namespace sluice::ir
