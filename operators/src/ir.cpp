#include "sluice/ir.hpp"

#include <algorithm>
#include <set>

#include "sluice/flow.hpp"

namespace sluice::detail {

namespace {
thread_local CurrentMember g_current;
}  // namespace

const CurrentMember& current_member() { return g_current; }
void set_current_member(CurrentMember m) { g_current = m; }

}  // namespace sluice::detail

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

Status Graph::complete_forward(uint32_t forward, uint32_t input) {
  std::string err;
  if (forward >= nodes_.size() || nodes_[forward].kind != NodeKind::kForward) {
    err = "n" + std::to_string(forward) + " is not a forward reference";
  } else if (!nodes_[forward].inputs.empty()) {
    err = "forward_ref n" + std::to_string(forward) + " was completed twice";
  } else if (input >= nodes_.size()) {
    err = "forward_ref n" + std::to_string(forward) + " completed with an unknown node";
  }
  if (!err.empty()) {
    errors_.push_back(err);
    return make_error(err);
  }
  nodes_[forward].inputs = {input};
  return {};
}

namespace {

std::string where(const Graph& g, const Node& n) {
  return "n" + std::to_string(n.id) + " " + n.op + " @" + g.location(n.location).name;
}

// Runs in the same tick as its inputs, after them (the nodes a tick orders).
bool same_tick(const Node& n) { return n.kind == NodeKind::kOp || n.kind == NodeKind::kForward; }

}  // namespace

Status Graph::check() const {
  if (!errors_.empty()) return make_error(errors_.front());
  for (const auto& n : nodes_) {
    if (n.kind == NodeKind::kForward && n.inputs.empty()) {
      return make_error("forward_ref " + where(*this, n) +
                        " was never completed: call complete() on its handle");
    }
  }
  for (const auto& loc : locations_) {
    if (auto s = schedule(loc.id); !s) return make_error(s.error());
  }
  return {};
}

Result<Schedule> Graph::schedule(uint32_t location) const {
  const size_t n = nodes_.size();
  // Nodes of this location a tick orders: operators, forward refs and network sends.
  auto ordered = [&](const Node& x) {
    return x.location == location && (same_tick(x) || x.kind == NodeKind::kNetwork);
  };
  // consumers[i]: ordered nodes that read i in the same tick.
  std::vector<std::vector<uint32_t>> consumers(n);
  for (const auto& x : nodes_) {
    if (!ordered(x)) continue;
    for (uint32_t in : x.inputs) {
      if (same_tick(nodes_[in]) && nodes_[in].location == location) consumers[in].push_back(x.id);
    }
  }
  Schedule out;
  std::vector<bool> cut(n, false);
  // A top-level forward ref that can reach itself closes a cycle: it delivers next tick.
  for (const auto& x : nodes_) {
    if (x.kind != NodeKind::kForward || x.location != location || x.tick_scoped) continue;
    std::vector<uint32_t> stack(consumers[x.id]);
    std::vector<bool> seen(n, false);
    bool cycle = false;
    while (!stack.empty() && !cycle) {
      uint32_t id = stack.back();
      stack.pop_back();
      if (id == x.id) cycle = true;
      if (seen[id]) continue;
      seen[id] = true;
      for (uint32_t c : consumers[id]) stack.push_back(c);
    }
    if (cycle) {
      cut[x.id] = true;
      out.back_edges.push_back(x.id);
    }
  }
  // Kahn's algorithm over the same-tick edges that remain.
  std::vector<uint32_t> indegree(n, 0);
  std::vector<uint32_t> ready;
  size_t total = 0;
  for (const auto& x : nodes_) {
    if (!ordered(x) || cut[x.id]) continue;
    ++total;
    for (uint32_t in : x.inputs) {
      if (same_tick(nodes_[in]) && nodes_[in].location == location && !cut[in]) ++indegree[x.id];
    }
    if (indegree[x.id] == 0) ready.push_back(x.id);
  }
  while (!ready.empty()) {
    uint32_t id = ready.front();
    ready.erase(ready.begin());
    out.order.push_back(id);
    if (cut[id]) continue;
    for (uint32_t c : consumers[id]) {
      if (!cut[c] && --indegree[c] == 0) ready.push_back(c);
    }
  }
  if (out.order.size() != total) {
    std::string names;
    for (const auto& x : nodes_) {
      if (ordered(x) && !cut[x.id] && indegree[x.id] != 0) {
        names += (names.empty() ? "" : ", ") + where(*this, x);
      }
    }
    return make_error(
        "a cycle inside a tick does not pass through defer_tick (" + names +
        "): complete a tick's forward_ref with a defer_tick() stream (complete_next_tick)");
  }
  return out;
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
