// The runtime: lowers each local member's part of the IR onto a oneTBB flow graph that moves
// batches, connects network edges to transport::Node channels, and drives ticks. This is the one
// place where flow-graph nodes meet the transport.
#include <unistd.h>

#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <atomic>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "placement.hpp"
#include "sluice/run.hpp"
#include "sluice/transport/bootstrap.hpp"
#include "sluice/transport/buffer_pool.hpp"
#include "sluice/transport/log.hpp"
#include "sluice/transport/node.hpp"
#include "sluice/transport/options.hpp"

namespace sluice {
namespace {

// SIGINT/SIGTERM: the first one asks every member to drain (sources stop, outputs close after
// their last frames, inputs are consumed to their end); a second one ends the process at once.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal.exchange(sig) != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

// Installs the handlers for the duration of run() and restores the previous ones after.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // The process exit code for a run that drained after a signal: 128 + signal, like a shell.
  static int exit_code_or(int code) {
    int sig = g_stop_signal.load();
    return sig != 0 && code == 0 ? 128 + sig : code;
  }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

using transport::Layout;
using transport::Node;
using transport::RunOptions;
namespace flow = tbb::flow;

// Data parallelism for operators: the member's arena, with the member's identity on every thread.
class TbbParallel final : public ir::Parallel {
 public:
  explicit TbbParallel(detail::CurrentMember who) : who_(who) {}
  int concurrency() const override { return tbb::this_task_arena::max_concurrency(); }
  void run(size_t n, const std::function<void(size_t)>& task) const override {
    tbb::parallel_for(size_t{0}, n, [&](size_t i) {
      detail::set_current_member(who_);
      task(i);
    });
  }

 private:
  detail::CurrentMember who_;
};

// What one network edge moved between this member and one peer.
struct EdgeStat {
  uint32_t edge = 0;
  bool tx = false;
  uint32_t peer = 0;  // rank; UINT32_MAX: elements that named no member (demux)
  uint64_t frames = 0, elements = 0, bytes = 0, dropped = 0;
};

// "location/member" of a rank; "rank N" for one this member never heard of.
std::string rank_name(const std::vector<transport::PeerInfo>& roster, uint32_t rank) {
  if (rank >= roster.size() || roster[rank].location.empty()) return "rank " + std::to_string(rank);
  return roster[rank].location + "/" + std::to_string(roster[rank].member);
}

// The id of the flow's location called `name`, if it has one.
std::optional<uint32_t> location_named(const ir::Graph& g, const std::string& name) {
  for (const auto& loc : g.locations()) {
    if (loc.name == name) return loc.id;
  }
  return std::nullopt;
}

constexpr uint32_t kNoRank = UINT32_MAX;  // a member id nobody here has heard of
constexpr size_t kNoSend = SIZE_MAX;      // a member id a network edge has no output for
constexpr size_t kTakeBytes = 1u << 20;   // frames decoded per input per tick (about L2)

// What a membership source sees of a cluster: every member present at start joins at the first
// poll, a member added to the running job joins at the poll after the runtime admitted it; a
// member the transport reports lost (heartbeats, endpoint errors, the launcher's exit report)
// leaves, once. A member that ended before this one joined never appears. Polled by the member's
// runtime thread only.
class MembershipTracker final : public ir::MembershipFeed {
 public:
  // `ranks` by member id (kNoRank: an id nobody here has heard of).
  MembershipTracker(uint32_t location, std::vector<uint32_t> ranks, const Node* node)
      : location_(location),
        ranks_(std::move(ranks)),
        node_(node),
        state_(ranks_.size(), kUnseen) {}
  uint32_t location() const { return location_; }
  void add(uint32_t member, uint32_t rank) {
    if (member >= ranks_.size()) {
      ranks_.resize(member + 1, kNoRank);
      state_.resize(member + 1, kUnseen);
    }
    ranks_[member] = rank;
  }
  void poll(std::vector<std::pair<uint32_t, bool>>& events) override {
    for (uint32_t m = 0; m < ranks_.size(); ++m) {
      if (ranks_[m] == kNoRank) continue;
      bool lost = node_ != nullptr && ranks_[m] != node_->rank() && node_->peer_lost(ranks_[m]);
      if (state_[m] == kUnseen && !lost) {
        state_[m] = kJoined;
        events.emplace_back(m, true);
      } else if (state_[m] == kJoined && lost) {
        state_[m] = kLeft;
        events.emplace_back(m, false);
      }
    }
  }

 private:
  enum State : uint8_t { kUnseen, kJoined, kLeft };
  uint32_t location_;
  std::vector<uint32_t> ranks_;
  const Node* node_;
  std::vector<State> state_;
};

// One member's lowered graph and its tick loop. Runs on one thread (the member's driver); each
// tick runs the location's nodes once, in dependency order, as a TBB graph of continue_nodes
// (independent branches run at the same time on the arena's threads).
//
// A tick: sources yield a batch each, received frames are decoded, deferred values come out;
// then every node runs on what its inputs brought; then each output edge sends what it got as
// one frame per destination. A tick runs only when something happened (data, a deferred value
// from a top-level cycle, or an input becoming done), so an idle member sleeps.
class MemberRuntime {
 public:
  // `node` is null when the flow has no network edge (nothing to connect: no transport at all).
  // `roster`: who every rank of the job is, as this member starts (members that ended before it
  // joined marked gone); it grows as members join.
  MemberRuntime(const ir::Graph& g, std::vector<transport::PeerInfo> roster, uint32_t rank,
                Node* node, const RunOptions& opts)
      : g_(g), roster_(std::move(roster)), rank_(rank), node_(node), opts_(opts) {
    const auto& ref = roster_.at(rank);
    name_ = rank_name(roster_, rank);
    location_ = location_named(g, ref.location).value_or(0);
    who_ = detail::CurrentMember{location_, ref.member};
    batch_ = 1;  // grows each tick towards opts.batch while output stays under tick_bytes
  }

  // Declares this member's channels on the node (before connect), and those a member that joins
  // later gets. Every member of the sending location has a channel to every member of the
  // receiving one.
  void declare_channels() {
    std::map<uint32_t, std::pair<std::vector<uint32_t>, std::vector<uint32_t>>> joiners;
    for (const auto& n : g_.nodes()) {
      if (n.kind != ir::NodeKind::kNetwork) continue;
      if (n.to_location == location_) joiners[n.location].first.push_back(n.edge);
      if (n.location == location_) joiners[n.to_location].second.push_back(n.edge);
      for (uint32_t src : ranks_of(n.location)) {
        for (uint32_t dst : ranks_of(n.to_location)) {
          if (src == kNoRank || dst == kNoRank) continue;
          if (src == rank_ && dst == rank_) continue;  // to itself: in memory (see flush)
          if (src == rank_) node_->declare_output(n.edge, dst);
          if (dst == rank_) node_->expect_input(n.edge, src);
        }
      }
    }
    for (auto& [loc, edges] : joiners) {
      node_->accept_joiners(g_.location(loc).name, std::move(edges.first), std::move(edges.second));
    }
    // A member that broadcasts encodes each payload once into memory its peers on this host map.
    // Blocks hold a frame's payload (about tick_bytes; larger frames go by UCX).
    for (const auto& n : g_.nodes()) {
      if (n.kind == ir::NodeKind::kNetwork && n.route == ir::Route::kBroadcast &&
          n.location == location_) {
        size_t block = std::min(opts_.transport.max_frame_bytes,
                                std::max<size_t>(size_t{4} << 20, 4 * opts_.tick_bytes));
        node_->share_broadcast_memory(block, 16);
        break;
      }
    }
  }

  // Runs ticks until every source is exhausted, every input closed and drained, and every output
  // acknowledged. Returns false when the job could not complete here (a peer was lost).
  bool run() {
    lower();
    find_feeds();
    TbbParallel parallel(who_);
    ctx_.parallel = &parallel;
    bool first = true;
    for (;;) {
      if (node_ != nullptr) node_->progress();  // spin mode: this thread drives the transport
      uint64_t seen = node_ != nullptr ? node_->activity() : 0;
      if (int sig = g_stop_signal.load(); sig != 0 && !draining_) drain_on_signal(sig);
      size_t pulled = 0;
      bool work = pull_roots(pulled) || first;
      first = false;
      if (work) run_tick();
      rx_.clear();  // releases receive descriptors and returns credit
      size_t produced = flush(ctx_.tick);
      adapt_batch(pulled, produced);
      close_finished_outputs();

      if (all_done()) break;
      if (!work) {
        if (node_ != nullptr) {
          node_->wait_activity(seen, idle_wait());
        } else {
          std::this_thread::sleep_for(idle_wait());  // only timers (or a signal) can bring work
        }
      }
    }
    bool complete = decode_errors_ == 0;
    for (auto& s : sends_) complete = complete && !s.failed;
    for (auto& r : recvs_) complete = complete && !node_->input_cut(r.edge);
    return complete;
  }

  const std::string& name() const { return name_; }

  // Who every rank is, members that joined included (after run(): for the stats).
  const std::vector<transport::PeerInfo>& roster() const { return roster_; }

  // What each network edge moved here, per peer (after run()).
  std::vector<EdgeStat> edge_stats() const {
    std::vector<EdgeStat> out;
    for (const auto& s : sends_) {
      out.push_back({s.edge, true, s.dst, s.frames, s.elements, s.bytes, s.dropped});
    }
    for (const auto& [id, net] : nets_) {
      if (net.dropped != 0) out.push_back({net.edge, true, UINT32_MAX, 0, 0, 0, net.dropped});
    }
    for (const auto& r : recvs_) {
      for (const auto& [src, st] : r.from) {
        EdgeStat e = st;
        e.edge = r.edge;
        e.tx = false;
        e.peer = src;
        out.push_back(e);
      }
    }
    return out;
  }

 private:
  // What a node put out this tick, and whether its output is done for good.
  struct Slot {
    ir::Chunks out;
    bool done = false;
  };
  struct Source {
    std::unique_ptr<ir::SourceCursor> cursor;
    uint32_t ir_node;
    bool local_sink = false;    // feeds a sink in this member
    std::vector<size_t> sends;  // indices into sends_ it feeds
    bool abandoned = false;     // every consumer is gone: stop pulling
    bool membership = false;    // source_cluster_members: never exhausted, keeps nothing alive
  };
  struct Recv {
    uint32_t edge;
    uint32_t ir_node;
    const ir::EdgeCodec* codec;
    std::map<uint32_t, EdgeStat> from;  // by sending rank
  };
  // A network edge leaving this member: one output (an index into sends_) per destination
  // member id; kNoSend for an id it has none for (never heard of, or ended before this member
  // joined). Members that join get theirs appended.
  struct Net {
    uint32_t edge;
    const ir::EdgeCodec* codec;
    ir::Route route;
    std::vector<size_t> outs;
    std::vector<size_t> sources;  // indices into sources_ that feed it
    uint64_t next = 0;            // round_robin: the index in the stream of the next element
    uint64_t dropped = 0;         // elements naming no member of the cluster (demux)
  };
  // A batch waiting for its frame. round_robin's share of a batch is every `stride`-th element
  // from `first`; for bulk-copyable types it is gathered straight into the frame at flush.
  struct Pending {
    ir::AnyBatch batch;
    size_t first = 0;
    size_t stride = 1;
    size_t size() const {
      const size_t n = batch->size();
      return stride == 1 ? n : (n > first ? (n - first + stride - 1) / stride : 0);
    }
    size_t encoded_size(const ir::EdgeCodec& c) const {
      return stride == 1 ? c.encoded_size(*batch) : c.strided_size(*batch, first, stride);
    }
    uint8_t* encode(const ir::EdgeCodec& c, uint8_t* out, ZeroCopySink* sink) const {
      return stride == 1 ? c.encode(*batch, out, sink)
                         : c.encode_strided(*batch, first, stride, out);
    }
    // Its elements as a batch of their own (a member's share materialized).
    ir::AnyBatch materialize(const ir::EdgeCodec& c) const {
      return stride == 1 ? batch : c.stride(*batch, first, stride);
    }
  };
  struct Send {
    uint32_t edge;
    uint32_t dst;
    uint32_t ir_node;
    uint32_t input;
    const ir::EdgeCodec* codec;
    std::vector<Pending> pending;  // not yet sent, encoded into one frame at flush
    bool done = false;             // its input will bring nothing more
    bool failed = false;
    bool blocked = false;  // the last flush found the window full
    bool closed = false;
    uint64_t frames = 0, elements = 0, bytes = 0;  // sent
    uint64_t dropped = 0;                          // elements for it while it was gone
  };
  // A value that crosses into the next tick: defer_tick (lazy), or a top-level forward_ref that
  // closes a cycle (eager: what it holds starts the next tick).
  struct Held {
    uint32_t ir_node;
    uint32_t input;
    bool eager;
    ir::Chunks next;
    bool input_done = false;      // the input was done in the tick `next` comes from
    std::vector<uint32_t> roots;  // eager: sources/receives upstream (slot ids)
    std::vector<size_t> loops;    // eager: held values upstream, itself included
    bool roots_done = false;      // eager: every root was done last tick
  };
  // Eager: its loop is quiet (roots done last tick, nothing in flight). Lazy: its input was done
  // last tick, or this is the location's last tick (it never starts one, so nothing follows).
  bool held_done(const Held& h, bool last_tick) const {
    if (!h.eager) return h.input_done || last_tick;
    bool quiet = h.roots_done;
    for (size_t k : h.loops) quiet = quiet && helds_[k].next.empty();
    return quiet;
  }
  // After pull_roots: every source and receive is done and no top-level cycle has more to give.
  bool last_tick() const {
    for (const auto& s : sources_) {
      if (!slots_[s.ir_node].done) return false;
    }
    for (const auto& r : recvs_) {
      if (!slots_[r.ir_node].done) return false;
    }
    for (const auto& h : helds_) {
      if (h.eager && !held_done(h, false)) return false;
    }
    return true;
  }

  void lower() {
    const auto& nodes = g_.nodes();
    slots_.resize(nodes.size());
    ops_.resize(nodes.size());
    auto sched = g_.schedule(location_);  // run() checked the graph
    sched_ = std::move(*sched);
    std::vector<bool> cut(nodes.size(), false);
    for (uint32_t id : sched_.back_edges) cut[id] = true;
    find_live();
    for (const auto& n : nodes) {
      bool here = n.location == location_ && live_[n.id];
      switch (n.kind) {
        case ir::NodeKind::kSource:
          if (!here) break;
          if (n.members_of != UINT32_MAX) {
            feeds_.push_back(
                std::make_unique<MembershipTracker>(n.members_of, ranks_of(n.members_of), node_));
            sources_.push_back(
                {n.make_membership(feeds_.back().get()), n.id, false, {}, false, true});
          } else {
            sources_.push_back({n.make_source(), n.id, false, {}, false, false});
          }
          break;
        case ir::NodeKind::kOp:
          if (here) ops_[n.id] = n.make_op();
          break;
        case ir::NodeKind::kDefer:
          if (here) helds_.push_back({n.id, n.inputs.at(0), false, {}, false, {}, {}, false});
          break;
        case ir::NodeKind::kForward:
          if (here && cut[n.id]) {
            helds_.push_back({n.id, n.inputs.at(0), true, {}, false, {}, {}, false});
          }
          break;
        case ir::NodeKind::kNetwork:
          if (here) {
            // One output per destination member, in member order.
            Net& net = nets_[n.id] = Net{n.edge, &n.codec, n.route, {}, {}};
            for (uint32_t dst : ranks_of(n.to_location)) {
              if (dst == kNoRank || roster_[dst].gone) {
                net.outs.push_back(kNoSend);
                continue;
              }
              net.outs.push_back(sends_.size());
              sends_.push_back(Send{n.edge, dst, n.id, n.inputs.at(0), &n.codec, {}});
              // To itself: the receive is not finished before this output closed, even while
              // it has sent nothing yet.
              if (dst == rank_) loopback_[n.edge];
            }
          }
          if (n.to_location == location_) recvs_.push_back(Recv{n.edge, n.id, &n.codec, {}});
          break;
      }
    }
    // The tick's graph: a continue_node per ordered node, fired when its inputs have run.
    graph_ = std::make_unique<flow::graph>();
    start_ = std::make_unique<flow::broadcast_node<flow::continue_msg>>(*graph_);
    std::map<uint32_t, flow::continue_node<flow::continue_msg>*> tbb_of;
    for (uint32_t id : sched_.order) {
      if (!live_[id]) continue;
      tbb_of[id] = own(std::make_unique<flow::continue_node<flow::continue_msg>>(
          *graph_, [this, id](const flow::continue_msg&) {
            run_node(id);
            return flow::continue_msg();
          }));
    }
    for (uint32_t id : sched_.order) {
      if (!live_[id]) continue;
      std::set<uint32_t> preds;
      for (uint32_t in : nodes[id].inputs) {
        // What a node reads from a network node is what arrived before the tick (a receive),
        // never the same tick's sends: no ordering edge (for a location sending to itself it
        // would close a cycle).
        if (tbb_of.count(in) && nodes[in].kind != ir::NodeKind::kNetwork) {
          preds.insert(in);
        }
      }
      if (preds.empty()) flow::make_edge(*start_, *tbb_of[id]);
      for (uint32_t p : preds) flow::make_edge(*tbb_of[p], *tbb_of[id]);
    }
  }

  // Which of this location's nodes matter: those that lead to an effect (a sink, a network send,
  // inspect). The rest never run: e.g. the intermediate streams a fused chain made but nobody read.
  void find_live() {
    const auto& nodes = g_.nodes();
    live_.assign(nodes.size(), false);
    std::vector<uint32_t> stack;
    for (const auto& n : nodes) {
      if (n.location == location_ && (n.sink || n.kind == ir::NodeKind::kNetwork)) {
        stack.push_back(n.id);
      }
    }
    while (!stack.empty()) {
      uint32_t id = stack.back();
      stack.pop_back();
      if (live_[id]) continue;
      live_[id] = true;
      if (nodes[id].kind == ir::NodeKind::kNetwork && nodes[id].location != location_) continue;
      for (uint32_t in : nodes[id].inputs) stack.push_back(in);
    }
    // A receive is live whatever reads it: its channel must be drained for the job to end.
    for (const auto& n : nodes) {
      if (n.kind == ir::NodeKind::kNetwork && n.to_location == location_) live_[n.id] = true;
    }
  }

  // Runs one node of the tick on what its inputs brought (a TBB task; nodes that do not depend
  // on each other may run at the same time, each writing only its own slot).
  void run_node(uint32_t id) {
    detail::set_current_member(who_);
    const ir::Node& n = g_.nodes()[id];
    bool done = true;
    std::vector<ir::Port> ports;
    ports.reserve(n.inputs.size());
    for (uint32_t in : n.inputs) {
      ports.push_back({&slots_[in].out, slots_[in].done});
      done = done && slots_[in].done;
    }
    switch (n.kind) {
      case ir::NodeKind::kOp: {
        std::unique_lock<std::mutex> lock(user_mu_, std::defer_lock);
        if (!n.pure) lock.lock();  // user code of a member: one operator at a time
        ops_[id]->run(ports, slots_[id].out, ctx_);
        slots_[id].done = done;
        break;
      }
      case ir::NodeKind::kForward:  // same tick: passes its input on
        slots_[id].out = *ports[0].chunks;
        slots_[id].done = done;
        break;
      case ir::NodeKind::kNetwork:
        route(nets_.at(id), *ports[0].chunks, done);
        break;
      default:
        assert(false && "sources and deferred values are not tick nodes");
    }
  }

  // Discards an output's pending batches from `first` on, counting their elements as dropped.
  static void drop_pending(Send& s, size_t first) {
    for (size_t k = first; k < s.pending.size(); ++k) s.dropped += s.pending[k].size();
    s.pending.clear();
  }

  // The rank of every member of a location by member id (kNoRank for an id nobody here heard
  // of: a late member that died before it registered).
  std::vector<uint32_t> ranks_of(uint32_t location) const {
    const auto& name = g_.location(location).name;
    std::vector<uint32_t> out;
    for (uint32_t r = 0; r < roster_.size(); ++r) {
      if (roster_[r].location != name) continue;
      if (roster_[r].member >= out.size()) out.resize(roster_[r].member + 1, kNoRank);
      out[roster_[r].member] = r;
    }
    return out;
  }

  // Whether destination member `m` of a network edge is present: known, not lost, its channel
  // still open.
  bool present(const Net& net, size_t m) const {
    if (net.outs[m] == kNoSend) return false;
    const Send& s = sends_[net.outs[m]];
    return !s.failed && !s.closed;  // route() marks a lost destination failed first
  }

  // A member joined the running job: from this tick on, every edge into its location has an
  // output to it (broadcast includes it, round_robin deals to it) and membership sources see it
  // join.
  void admit(const transport::PeerInfo& p) {
    if (p.rank >= roster_.size()) roster_.resize(p.rank + 1);
    roster_[p.rank] = p;
    if (p.gone) return;  // ended before it registered: it only took its rank
    const std::optional<uint32_t> loc = location_named(g_, p.location);
    if (!loc) return;
    for (auto& [id, net] : nets_) {
      if (g_.nodes()[id].to_location != *loc) continue;
      const size_t k = sends_.size();
      sends_.push_back(Send{net.edge, p.rank, id, g_.nodes()[id].inputs.at(0), net.codec, {}});
      if (net.outs.size() <= p.member) net.outs.resize(p.member + 1, kNoSend);
      net.outs[p.member] = k;
      for (size_t src : net.sources) sources_[src].sends.push_back(k);
    }
    for (auto& f : feeds_) {
      if (f->location() == *loc) f->add(p.member, p.rank);
    }
    SLUICE_LOG_INFO("%s: %s joined (rank %u)", name_.c_str(), rank_name(roster_, p.rank).c_str(),
                    p.rank);
  }

  // A network edge's share of a tick: each batch goes to its destinations' pending lists (sent at
  // flush as one frame per destination). Elements for a member that is gone are dropped and
  // counted, never sent into the void.
  void route(Net& net, const ir::Chunks& in, bool done) {
    // A destination the transport reports lost ends its channel here (what was sent is a
    // prefix); a source whose every output ended stops (abandon_if_useless).
    for (size_t k : net.outs) {
      if (k == kNoSend) continue;
      Send& s = sends_[k];
      if (!s.failed && node_ != nullptr && node_->peer_lost(s.dst)) {
        s.failed = true;
        drop_pending(s, 0);
        SLUICE_LOG_ERROR("edge %u: %s is lost; this channel stops here", s.edge,
                         rank_name(roster_, s.dst).c_str());
      }
    }
    auto to = [&](size_t m, Pending p) {
      if (p.batch == nullptr || p.size() == 0) return;
      if (net.outs[m] == kNoSend) {
        net.dropped += p.size();  // a member id nobody here has an output for
        return;
      }
      Send& s = sends_[net.outs[m]];
      if (present(net, m)) {
        s.pending.push_back(std::move(p));
      } else {
        s.dropped += p.size();
      }
    };
    const size_t count = net.outs.size();
    for (const auto& b : in) {
      if (b->size() == 0) continue;
      switch (net.route) {
        case ir::Route::kOne:
        case ir::Route::kBroadcast:  // the same batch (encoded once at flush) to every member
          for (size_t m = 0; m < count; ++m) {
            if (net.outs[m] != kNoSend) to(m, {b});
          }
          break;
        case ir::Route::kDemux: {
          std::vector<ir::AnyBatch> per(count);
          net.codec->split(*b, per);
          size_t placed = 0;
          for (size_t m = 0; m < count; ++m) {
            if (per[m] == nullptr) continue;
            placed += per[m]->size();
            to(m, {per[m]});
          }
          net.dropped += b->size() - placed;  // named no member of the cluster
          break;
        }
        case ir::Route::kRoundRobin: {
          // Element i of the stream to members[i % n] of those present now.
          std::vector<size_t> members;
          for (size_t m = 0; m < count; ++m) {
            if (present(net, m)) members.push_back(m);
          }
          if (members.empty()) {  // nobody to deal to: dropped (and counted), not held
            net.dropped += b->size();
            break;
          }
          size_t n = members.size();
          for (size_t j = 0; j < n; ++j) {
            size_t first = (j + n - net.next % n) % n;
            if (net.codec->encode_strided) {  // gathered into the frame at flush
              to(members[j], {b, first, n});
            } else {
              to(members[j], {net.codec->stride(*b, first, n)});
            }
          }
          net.next += b->size();
          break;
        }
      }
    }
    for (size_t k : net.outs) {
      if (k != kNoSend) sends_[k].done = done;
    }
  }

  // Fills the roots of a tick: source batches, received frames. True if anything happened.
  bool pull_roots(size_t& pulled) {
    bool work = false;
    if (node_ != nullptr) {
      for (const auto& p : node_->take_joined()) {
        admit(p);
        work = true;  // a tick routes to it (and closes its channels if their input is done)
      }
    }
    for (auto& s : sources_) {
      Slot& slot = slots_[s.ir_node];
      slot.out.clear();
      if (!s.cursor->exhausted() && !abandon_if_useless(s) && !feeds_blocked_send(s)) {
        // Back-pressure: a source whose output still waits for window does not pull more.
        // A tick's batch comes in cache-sized chunks.
        for (size_t left = batch_; left > 0 && !s.cursor->exhausted();) {
          ir::AnyBatch b = s.cursor->next(std::min(left, detail::kPiece));
          if (b->size() == 0) break;
          left -= std::min(left, b->size());
          pulled += b->size();
          slot.out.push_back(std::move(b));
          work = true;
        }
      }
      if (s.membership) continue;  // its done flag follows the other roots (below)
      bool done = source_done(s);
      if (done != slot.done) work = true;
      slot.done = done;
    }
    // Inputs are always taken, even while an output is blocked: the peer we wait on may be
    // waiting for us to consume (two members sending to each other).
    for (auto& r : recvs_) {
      Slot& slot = slots_[r.ir_node];
      slot.out.clear();
      size_t first = rx_.size();
      // About an L2's worth a tick: what is decoded here is read again by the consumers
      // right after, and a backlog taken whole would leave it in memory, not cache.
      node_->take(r.edge, rx_, 64, kTakeBytes);
      for (size_t i = first; i < rx_.size(); ++i) {
        auto& f = rx_[i];
        const size_t bytes = f.elements().size();
        // A split frame's elements have a buffer of their own: plain values take it as it is.
        auto mem = r.codec->adopt ? f.take_elements() : transport::PooledBuffer();
        auto b = mem ? r.codec->adopt(std::move(mem), bytes, f.count())
                     : r.codec->decode(f.elements(), f.count(), f.share());
        if (!b) {
          ++decode_errors_;
          SLUICE_LOG_ERROR("edge %u: dropped a frame from rank %u: %s", r.edge, f.src(),
                           b.error().c_str());
          continue;
        }
        // A frame from a member that joined after this tick's admissions: admit it now.
        if (f.src() >= roster_.size()) {
          for (const auto& p : node_->take_joined()) admit(p);
        }
        auto& st = r.from[f.src()];
        ++st.frames;
        st.elements += f.count();
        st.bytes += bytes;
        // Keyed by sender: (MemberId<sender>, element) pairs.
        if (r.codec->tag) *b = r.codec->tag(*b, roster_[f.src()].member);
        slot.out.push_back(std::move(*b));
        work = true;
      }
      // What this member sent itself on the edge (a location sending to itself).
      if (auto lb = loopback_.find(r.edge); lb != loopback_.end()) {
        for (auto& b : lb->second.batches) {
          auto& st = r.from[rank_];
          ++st.frames;
          st.elements += b->size();
          if (r.codec->tag) b = r.codec->tag(b, roster_[rank_].member);
          slot.out.push_back(std::move(b));
          work = true;
        }
        lb->second.batches.clear();
      }
      bool done = recv_finished(r);
      if (done != slot.done) work = true;
      slot.done = done;
    }
    // Membership streams never end, but they do not keep the job alive: they count as done once
    // every other root is.
    bool others_done = true;
    for (const auto& s : sources_) others_done = others_done && (s.membership || source_done(s));
    for (const auto& r : recvs_) others_done = others_done && slots_[r.ir_node].done;
    for (const auto& s : sources_) {
      if (!s.membership) continue;
      if (others_done != slots_[s.ir_node].done) work = true;
      slots_[s.ir_node].done = others_done;
    }
    for (const auto& h : helds_) {
      if (h.eager && !h.next.empty()) work = true;
      // A top-level cycle that went quiet: one more tick tells its consumers it is done.
      if (h.eager && held_done(h, false) && !slots_[h.ir_node].done) work = true;
    }
    return work;
  }

  void run_tick() {
    ++ctx_.tick;
    // Deferred values come out first.
    bool last = last_tick();
    for (auto& h : helds_) slots_[h.ir_node].done = held_done(h, last);
    for (auto& h : helds_) {
      Slot& slot = slots_[h.ir_node];
      slot.out = std::move(h.next);
      h.next.clear();
    }
    start_->try_put(flow::continue_msg());
    graph_->wait_for_all();
    for (auto& h : helds_) {
      h.next = slots_[h.input].out;
      h.input_done = slots_[h.input].done;
      if (h.eager) {
        h.roots_done = true;
        for (uint32_t r : h.roots) h.roots_done = h.roots_done && slots_[r].done;
      }
    }
    // Release this tick's batches (and the frames they point into) now.
    for (auto& slot : slots_) slot.out.clear();
  }

  // Who feeds whom inside this member, found by walking upstream from each consumer:
  // - each source learns its outputs and whether it feeds a local sink, so it stops once every
  //   one of its consumers is gone, and pauses while an output it feeds waits for window;
  // - each top-level cycle learns its roots and the cycles upstream, to know when it is done.
  void find_feeds() {
    std::map<uint32_t, size_t> source_of, held_of;
    for (size_t i = 0; i < sources_.size(); ++i) source_of[sources_[i].ir_node] = i;
    for (size_t i = 0; i < helds_.size(); ++i) held_of[helds_[i].ir_node] = i;
    std::set<uint32_t> recv_ids;
    for (const auto& r : recvs_) recv_ids.insert(r.ir_node);
    // Calls on_node for every local node upstream of `node` (receives end the walk).
    auto walk_up = [&](uint32_t node, const std::function<void(uint32_t)>& on_node) {
      std::vector<uint32_t> stack(g_.nodes()[node].inputs);
      std::set<uint32_t> seen;
      while (!stack.empty()) {
        uint32_t id = stack.back();
        stack.pop_back();
        if (!seen.insert(id).second) continue;
        on_node(id);
        if (recv_ids.count(id)) continue;  // upstream of a receive is another member's business
        for (uint32_t in : g_.nodes()[id].inputs) stack.push_back(in);
      }
    };
    for (auto& [net_id, net] : nets_) {
      walk_up(net_id, [&](uint32_t id) {
        if (auto it = source_of.find(id); it != source_of.end()) net.sources.push_back(it->second);
      });
      for (size_t src : net.sources) {
        for (size_t k : net.outs) {
          if (k != kNoSend) sources_[src].sends.push_back(k);
        }
      }
    }
    for (const auto& n : g_.nodes()) {
      if (!n.sink || n.location != location_) continue;
      walk_up(n.id, [&](uint32_t id) {
        if (auto it = source_of.find(id); it != source_of.end())
          sources_[it->second].local_sink = true;
      });
    }
    for (size_t k = 0; k < helds_.size(); ++k) {
      if (!helds_[k].eager) continue;
      walk_up(helds_[k].ir_node, [&](uint32_t id) {
        if (source_of.count(id) || recv_ids.count(id)) helds_[k].roots.push_back(id);
        if (auto it = held_of.find(id); it != held_of.end() && helds_[it->second].eager) {
          helds_[k].loops.push_back(it->second);
        }
      });
    }
  }

  bool feeds_blocked_send(const Source& s) const {
    for (size_t i : s.sends) {
      if (sends_[i].blocked) return true;
    }
    return false;
  }

  bool source_done(const Source& s) const { return s.abandoned || s.cursor->exhausted(); }

  // How long an idle member may sleep: until the next timer source is due, at most 100 ms.
  std::chrono::microseconds idle_wait() const {
    auto wait = std::chrono::microseconds(100000);
    auto now = std::chrono::steady_clock::now();
    for (const auto& s : sources_) {
      if (source_done(s)) continue;
      if (auto at = s.cursor->wake_at()) {
        auto d = std::chrono::duration_cast<std::chrono::microseconds>(*at - now);
        wait = std::max(std::chrono::microseconds(0), std::min(wait, d));
      }
    }
    return wait;
  }

  // Closes every output whose input is done and whose last batches have left: the receiver sees
  // end-of-stream after them.
  void close_finished_outputs() {
    for (auto& out : sends_) {
      if (out.closed || !out.pending.empty() || !out.done) continue;
      if (out.dst == rank_) {
        loopback_[out.edge].closed = true;
      } else if (!out.failed) {
        node_->close_output(out.edge, out.dst);
      }
      out.closed = true;
    }
  }

  // Every channel into a receive ended and was drained, its loopback included.
  bool recv_finished(const Recv& r) const {
    if (!node_->input_finished(r.edge)) return false;
    auto lb = loopback_.find(r.edge);
    return lb == loopback_.end() || (lb->second.closed && lb->second.batches.empty());
  }

  bool all_done() const {
    for (const auto& s : sources_) {
      if (!s.membership && !source_done(s)) return false;
    }
    for (const auto& r : recvs_) {
      if (!recv_finished(r)) return false;
    }
    for (const auto& out : sends_) {
      if (!out.closed) return false;
    }
    for (const auto& h : helds_) {
      if (h.eager && !h.next.empty()) return false;
      if (h.eager && held_done(h, false) && !slots_[h.ir_node].done) return false;
    }
    return node_ == nullptr || node_->outputs_drained();
  }

  // A stop signal: sources yield nothing more; what they produced is still sent, and outputs
  // close after it, so receivers get a clean end-of-stream (a prefix of the stream).
  void drain_on_signal(int sig) {
    draining_ = true;
    SLUICE_LOG_WARN("%s: signal %d: stopping sources and draining", name_.c_str(), sig);
    for (auto& s : sources_) s.abandoned = true;
  }

  bool abandon_if_useless(Source& s) {
    if (s.abandoned) return true;
    if (s.local_sink || s.sends.empty()) return false;
    for (size_t i : s.sends) {
      if (!sends_[i].failed) return false;
    }
    s.abandoned = true;
    SLUICE_LOG_ERROR("every consumer of a source here is gone; it stops");
    return true;
  }

  template <typename N>
  N* own(std::unique_ptr<N> n) {
    N* raw = n.get();
    owned_.push_back(std::move(n));
    return raw;
  }

  // One frame per (edge, destination) per tick, split only past the frame size limit. A frame
  // the window cannot take within kMaxSendWait stays pending (with what follows) for a later
  // tick: the runtime thread never waits on a peer for long, so it keeps consuming its own
  // inputs (two members whose windows are both full would otherwise wait for each other).
  static constexpr std::chrono::microseconds kMaxSendWait{2000};
  // A broadcast frame's elements encoded once per flush; every destination's frame sends them.
  struct Encoded {
    std::shared_ptr<uint8_t> shared;  // a block of the node's shared segment, when it had one
    transport::PooledBuffer bytes;    // empty when `data` is the batch's own memory or `shared`
    const uint8_t* data = nullptr;
    size_t size = 0;
  };
  struct FrameKeep {
    std::vector<ir::AnyBatch> batches;
    std::vector<std::shared_ptr<const Encoded>> encoded;
  };
  size_t flush(uint64_t tick) {
    size_t total = 0;
    // A broadcast frame's element bytes, encoded once for every destination whose frame holds
    // the same batches, as one contiguous piece: the transport then sends it split (see
    // transport::FrameHeader), so each member pulls it by zero-copy rendezvous instead of the
    // sender copying it into every member's FIFO. A single plain-value batch is its own memory.
    std::map<std::vector<const ir::BatchBase*>, std::shared_ptr<const Encoded>> encoded;
    auto encode_once = [&](const ir::EdgeCodec& codec, const std::vector<ir::AnyBatch>& batches,
                           size_t bytes) {
      std::vector<const ir::BatchBase*> key;
      for (const auto& b : batches) key.push_back(b.get());
      auto& e = encoded[key];
      if (e != nullptr) return e;
      auto enc = std::make_shared<Encoded>();
      // Peers on this host copy the payload out of the node's shared segment themselves: one
      // copy here beats one kernel copy per member (see Node::share_broadcast_memory).
      enc->shared = node_->shared_buffer(bytes);
      if (!enc->shared && batches.size() == 1 && codec.raw) {
        auto view = codec.raw(*batches[0]);
        enc->data = view.data();
        enc->size = view.size();
      } else {
        if (!enc->shared) enc->bytes = transport::pool_allocate(bytes);
        uint8_t* const start = enc->shared ? enc->shared.get() : enc->bytes.get();
        enc->data = start;
        enc->size = bytes;
        uint8_t* p = start;
        for (const auto& b : batches) p = codec.encode(*b, p, nullptr);
        assert(p == start + bytes && "a Codec's size() disagrees with encode()");
      }
      e = std::move(enc);
      return e;
    };
    for (auto& s : sends_) {
      s.blocked = false;
      if (s.pending.empty()) continue;
      if (s.failed) {
        drop_pending(s, 0);
        continue;
      }
      if (s.dst == rank_) {  // to itself: the batches themselves, next tick, no transport
        auto& lb = loopback_[s.edge];
        for (auto& p : s.pending) {
          s.elements += p.size();
          lb.batches.push_back(p.materialize(*s.codec));
        }
        ++s.frames;
        s.pending.clear();
        continue;
      }
      size_t limit = opts_.transport.max_frame_bytes - 1024;
      size_t i = 0;
      while (i < s.pending.size()) {
        size_t j = i, bytes = 0, count = 0;
        while (j < s.pending.size()) {
          size_t b = s.pending[j].encoded_size(*s.codec);
          if (j > i && bytes + b > limit) break;
          bytes += b;
          count += s.pending[j].size();
          ++j;
        }
        if (bytes > limit) {
          // Losing elements silently would break exactly-once: the channel stops instead.
          SLUICE_LOG_ERROR(
              "edge %u: a batch encodes to %zu bytes, over the %zu-byte frame limit "
              "(--sluice-max-frame); the channel stops here",
              s.edge, bytes, limit);
          s.failed = true;
          break;
        }
        // Large payloads (e.g. Bytes) are left as holes and sent from their own memory; the
        // batches stay alive with the frame until UCX is done with them.
        struct Holes final : ZeroCopySink {
          std::vector<transport::FrameHole>* out = nullptr;
          void add(uint8_t* at, const uint8_t* src, size_t n) override {
            out->push_back({at, src, n});
          }
        };
        auto keep = std::make_shared<FrameKeep>();
        for (size_t k = i; k < j; ++k) keep->batches.push_back(s.pending[k].batch);
        if (nets_.at(s.ir_node).route == ir::Route::kBroadcast) {
          keep->encoded.push_back(encode_once(*s.codec, keep->batches, bytes));
        }
        auto st = node_->send_data(
            s.edge, s.dst, tick, static_cast<uint32_t>(count), bytes,
            [&](uint8_t* p, std::vector<transport::FrameHole>& holes) {
              uint8_t* const start = p;
              if (!keep->encoded.empty()) {  // broadcast: the shared bytes, not a new encoding
                for (const auto& e : keep->encoded) {
                  holes.push_back({p, e->data, e->size});
                  p += e->size;
                }
              } else {
                Holes sink;
                sink.out = &holes;
                for (size_t k = i; k < j; ++k) p = s.pending[k].encode(*s.codec, p, &sink);
              }
              assert(p == start + bytes && "a Codec's size() disagrees with its encode()");
              (void)start;
            },
            keep, kMaxSendWait, /*split=*/!keep->encoded.empty());
        if (st == transport::SendStatus::kWouldBlock) {
          s.blocked = true;
          break;
        }
        if (st != transport::SendStatus::kOk) {
          SLUICE_LOG_ERROR("edge %u: sending to %s failed (%s); this channel stops here", s.edge,
                           rank_name(roster_, s.dst).c_str(),
                           st == transport::SendStatus::kPeerLost ? "peer lost" : "shutting down");
          s.failed = true;
          break;
        }
        total += bytes;
        ++s.frames;
        s.elements += count;
        s.bytes += bytes;
        i = j;
      }
      if (s.failed) {
        drop_pending(s, i);  // never sent
      } else {
        s.pending.erase(s.pending.begin(), s.pending.begin() + static_cast<long>(i));
      }
    }
    return total;
  }

  // Sources yield up to batch_ elements per tick; aim each tick's output at tick_bytes so huge
  // elements do not pile up and tiny ones are sent in large frames.
  void adapt_batch(size_t pulled, size_t produced) {
    if (pulled == 0) return;
    if (produced > opts_.tick_bytes && pulled > 1) {
      batch_ = std::max<size_t>(1, pulled * opts_.tick_bytes / produced);
    } else if (pulled >= batch_ && produced * 2 <= opts_.tick_bytes) {
      batch_ = std::min<size_t>(opts_.batch, batch_ * 2);
    }
  }

  const ir::Graph& g_;
  std::vector<transport::PeerInfo> roster_;  // by rank
  uint32_t rank_;
  Node* node_;
  const RunOptions& opts_;
  std::string name_;
  uint32_t location_ = 0;
  detail::CurrentMember who_;
  size_t batch_;
  uint64_t decode_errors_ = 0;
  bool draining_ = false;
  ir::TickContext ctx_;
  ir::Schedule sched_;
  // Made in lower(), on the member's thread inside its arena: a flow graph runs its tasks in the
  // arena it was constructed in.
  std::unique_ptr<flow::graph> graph_;
  std::unique_ptr<flow::broadcast_node<flow::continue_msg>> start_;
  std::vector<std::shared_ptr<void>> owned_;
  std::mutex user_mu_;       // serializes the member's non-pure operators (see ir::Node::pure)
  std::vector<Slot> slots_;  // by IR node id
  std::vector<bool> live_;   // by IR node id
  std::vector<std::unique_ptr<ir::Op>> ops_;  // by IR node id (this location's kOp nodes)
  std::vector<Source> sources_;
  std::vector<Recv> recvs_;
  std::vector<Send> sends_;
  std::map<uint32_t, Net> nets_;  // IR node id -> its outputs
  std::vector<std::unique_ptr<MembershipTracker>> feeds_;
  std::vector<Held> helds_;
  std::vector<transport::RxFrame> rx_;
  // A location sending to itself: what this member sent itself, by edge (handed to the receive
  // at the next pull, in order; closed with the output).
  struct Loopback {
    std::vector<ir::AnyBatch> batches;
    bool closed = false;
  };
  std::map<uint32_t, Loopback> loopback_;
};

std::string random_job_id() {
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "embedded-%08x", rd());
  return buf;
}

// Who every rank of a job started from `layout` is.
std::vector<transport::PeerInfo> roster_of(const Layout& layout) {
  std::vector<transport::PeerInfo> out(layout.size());
  for (uint32_t r = 0; r < layout.size(); ++r) {
    auto ref = layout.member_of(r);
    out[r].rank = r;
    out[r].location = ref.location;
    out[r].member = ref.member;
  }
  return out;
}

void print_stats(const std::string& who, const Node& node,
                 const std::vector<transport::PeerInfo>& roster,
                 const std::vector<EdgeStat>& edges) {
  auto st = node.stats();
  // split/shared: of frames_tx, those sent split (payload pulled by the peer through UCX) and
  // those whose payload the peer copied out of this member's shared segment.
  std::fprintf(stderr, "sluice stats [%s]\n  %-14s %10s %14s %8s %8s %10s %14s %8s %10s %s\n",
               who.c_str(), "peer", "frames_tx", "bytes_tx", "split", "shared", "frames_rx",
               "bytes_rx", "rejected", "blocked_ms", "lanes");
  for (uint32_t r = 0; r < st.size(); ++r) {
    if (r == node.rank()) continue;
    const auto& p = st[r];
    std::fprintf(stderr, "  %-14s %10llu %14llu %8llu %8llu %10llu %14llu %8llu %10.1f %s%s\n",
                 rank_name(roster, r).c_str(), (unsigned long long)p.frames_sent,
                 (unsigned long long)p.bytes_sent, (unsigned long long)p.frames_split,
                 (unsigned long long)p.frames_shared, (unsigned long long)p.frames_received,
                 (unsigned long long)p.bytes_received, (unsigned long long)p.frames_rejected,
                 static_cast<double>(p.blocked_ns) / 1e6, p.lanes.empty() ? "-" : p.lanes.c_str(),
                 p.lost ? " (lost)" : "");
  }
  std::fprintf(stderr, "  %-6s %-3s %-14s %10s %14s %14s %10s\n", "edge", "dir", "peer", "frames",
               "elements", "bytes", "dropped");
  for (const auto& e : edges) {
    std::string peer = e.peer == UINT32_MAX ? "(no member)" : rank_name(roster, e.peer);
    std::fprintf(stderr, "  %-6u %-3s %-14s %10llu %14llu %14llu %10llu\n", e.edge,
                 e.tx ? "tx" : "rx", peer.c_str(), (unsigned long long)e.frames,
                 (unsigned long long)e.elements, (unsigned long long)e.bytes,
                 (unsigned long long)e.dropped);
  }
}

// The same counters as JSON, one file per member: DIR/stats-<location>-<member>.json.
void write_stats_json(const std::string& dir, const std::string& who, const Node* node,
                      const std::vector<transport::PeerInfo>& roster,
                      const std::vector<EdgeStat>& edges) {
  std::string file = who;
  for (char& c : file) {
    if (c == '/') c = '-';
  }
  std::string path = dir + "/stats-" + file + ".json";
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) {
    SLUICE_LOG_ERROR("cannot write %s: %s", path.c_str(), std::strerror(errno));
    return;
  }
  std::fprintf(f, "{\"member\": \"%s\", \"peers\": [", who.c_str());
  if (node != nullptr) {
    auto st = node->stats();
    bool first = true;
    for (uint32_t r = 0; r < st.size(); ++r) {
      if (r == node->rank()) continue;
      const auto& p = st[r];
      std::fprintf(f,
                   "%s\n  {\"peer\": \"%s\", \"frames_tx\": %llu, \"bytes_tx\": %llu, "
                   "\"frames_split\": %llu, \"frames_shared\": %llu, \"frames_rx\": %llu, "
                   "\"bytes_rx\": %llu, \"rejected\": %llu, "
                   "\"blocked_ms\": %.3f, \"lanes\": \"%s\", \"lost\": %s}",
                   first ? "" : ",", rank_name(roster, r).c_str(),
                   (unsigned long long)p.frames_sent, (unsigned long long)p.bytes_sent,
                   (unsigned long long)p.frames_split, (unsigned long long)p.frames_shared,
                   (unsigned long long)p.frames_received, (unsigned long long)p.bytes_received,
                   (unsigned long long)p.frames_rejected, static_cast<double>(p.blocked_ns) / 1e6,
                   p.lanes.c_str(), p.lost ? "true" : "false");
      first = false;
    }
  }
  std::fprintf(f, "],\n \"edges\": [");
  for (size_t i = 0; i < edges.size(); ++i) {
    const auto& e = edges[i];
    std::string peer = e.peer == UINT32_MAX ? "" : rank_name(roster, e.peer);
    std::fprintf(f,
                 "%s\n  {\"edge\": %u, \"dir\": \"%s\", \"peer\": \"%s\", \"frames\": %llu, "
                 "\"elements\": %llu, \"bytes\": %llu, \"dropped\": %llu}",
                 i == 0 ? "" : ",", e.edge, e.tx ? "tx" : "rx", peer.c_str(),
                 (unsigned long long)e.frames, (unsigned long long)e.elements,
                 (unsigned long long)e.bytes, (unsigned long long)e.dropped);
  }
  std::fprintf(f, "]}\n");
  std::fclose(f);
}

// Checks that the launcher's layout names exactly the flow's locations, with one member per
// process.
Status check_layout(const ir::Graph& g, const Layout& layout) {
  std::set<std::string> flow_names;
  for (const auto& loc : g.locations()) {
    flow_names.insert(loc.name);
    auto count = layout.count_of(loc.name);
    if (!count) {
      return make_error("the layout '" + layout.to_string() + "' does not name location '" +
                        loc.name + "' of this program");
    }
    if (loc.kind == ir::LocationKind::kProcess && *count != 1) {
      return make_error("location '" + loc.name +
                        "' is a process and needs exactly 1 member, the "
                        "layout gives " +
                        std::to_string(*count));
    }
  }
  for (const auto& spec : layout.locations()) {
    if (!flow_names.count(spec.name)) {
      return make_error("the layout names '" + spec.name + "', which this program does not have");
    }
  }
  return {};
}

int run_embedded(const ir::Graph& g, const RunOptions& opts) {
  std::vector<transport::LocationSpec> specs;
  for (const auto& loc : g.locations()) {
    uint32_t count = 1;
    if (loc.kind == ir::LocationKind::kCluster) {
      auto it = opts.cluster_sizes.find(loc.name);
      count = it == opts.cluster_sizes.end() ? 4 : it->second;
    }
    specs.push_back({loc.name, count});
  }
  Layout layout(specs);
  std::string job = random_job_id();
  std::vector<std::unique_ptr<Node>> nodes;
  std::vector<std::unique_ptr<MemberRuntime>> members;
  // Placements first, from this (unpinned) thread: each member gets its share of the cores.
  std::vector<std::unique_ptr<detail::MemberPlacement>> places;
  for (uint32_t r = 0; r < layout.size(); ++r) {
    auto place = detail::MemberPlacement::create(opts.bind, r, layout.size());
    if (!place) {
      SLUICE_LOG_ERROR("%s", place.error().c_str());
      return 2;
    }
    SLUICE_LOG_INFO("%s: %s", layout.member_of(r).to_string().c_str(),
                    (*place)->describe().c_str());
    places.push_back(std::move(*place));
  }
  // A flow without network edges needs no transport: members just run their ticks.
  bool networked = false;
  for (const auto& n : g.nodes()) networked = networked || n.kind == ir::NodeKind::kNetwork;
  std::vector<transport::PeerInfo> peers;
  for (uint32_t r = 0; r < layout.size(); ++r) {
    auto ref = layout.member_of(r);
    if (!networked) {
      members.push_back(std::make_unique<MemberRuntime>(g, roster_of(layout), r, nullptr, opts));
      continue;
    }
    auto topts = opts.transport;
    topts.cpu_share = places[r]->share();  // the progress thread joins the member's share
    auto node = Node::create(topts, r, layout.size(), job, ref.to_string());
    if (!node) {
      SLUICE_LOG_ERROR("%s", node.error().c_str());
      return 2;
    }
    nodes.push_back(std::move(*node));
    members.push_back(
        std::make_unique<MemberRuntime>(g, roster_of(layout), r, nodes.back().get(), opts));
    members.back()->declare_channels();
    transport::PeerInfo p;
    p.rank = r;
    p.location = ref.location;
    p.member = ref.member;
    p.pid = static_cast<uint32_t>(getpid());
    p.address = nodes.back()->worker_address();
    peers.push_back(std::move(p));
  }
  for (auto& n : nodes) {
    if (auto s = n->connect(peers); !s) {
      SLUICE_LOG_ERROR("%s", s.error().c_str());
      return 2;
    }
  }
  std::atomic<bool> ok{true};
  std::vector<std::thread> threads;
  for (uint32_t r = 0; r < members.size(); ++r) {
    threads.emplace_back([&ok, mr = members[r].get(), node = networked ? nodes[r].get() : nullptr,
                          place = places[r].get()] {
      try {
        if (!place->execute([mr] { return mr->run(); })) ok = false;
      } catch (const std::exception& e) {
        // User code threw inside this member's graph: report it, end this member cleanly.
        SLUICE_LOG_ERROR("%s: unhandled exception: %s", mr->name().c_str(), e.what());
        ok = false;
      }
      // Leave as soon as this member is done, as a launched process would: its last
      // acknowledgements go out now (in spin mode nobody else would send them).
      if (node != nullptr) node->shutdown();
    });
  }
  for (auto& t : threads) t.join();
  for (uint32_t r = 0; r < members.size(); ++r) {
    Node* n = networked ? nodes[r].get() : nullptr;
    auto edges = members[r]->edge_stats();
    if (opts.stats && n != nullptr) print_stats(n->name(), *n, members[r]->roster(), edges);
    if (!opts.stats_json.empty()) {
      write_stats_json(opts.stats_json, members[r]->name(), n, members[r]->roster(), edges);
    }
  }
  members.clear();
  return ok ? 0 : 1;
}

int run_member(const ir::Graph& g, const RunOptions& opts) {
  auto env = transport::LauncherEnv::from_environment();
  if (!env) {
    SLUICE_LOG_ERROR("%s", env.error().c_str());
    return 2;
  }
  set_log_member(env->location + "/" + std::to_string(env->member));
  if (auto s = check_layout(g, env->layout); !s) {
    SLUICE_LOG_ERROR("%s", s.error().c_str());
    return 2;
  }
  // All members of a sluice-run job share this host: the rank is the local index (a late
  // member's rank lies past the layout).
  const uint32_t ranks = std::max(env->layout.size(), env->rank + 1);
  auto place = detail::MemberPlacement::create(opts.bind, env->rank, ranks);
  if (!place) {
    SLUICE_LOG_ERROR("%s", place.error().c_str());
    return 2;
  }
  SLUICE_LOG_INFO("%s", (*place)->describe().c_str());
  auto topts = opts.transport;
  topts.cpu_share = (*place)->share();
  auto node = Node::create(topts, env->rank, ranks, env->job_id,
                           env->location + "/" + std::to_string(env->member));
  if (!node) {
    SLUICE_LOG_ERROR("%s", node.error().c_str());
    return 2;
  }
  transport::PeerInfo self;
  self.rank = env->rank;
  self.location = env->location;
  self.member = env->member;
  self.pid = static_cast<uint32_t>(getpid());
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  self.hostname = host;
  self.address = (*node)->worker_address();
  auto session = transport::LauncherSession::connect(*env, self, 60000);
  if (!session) {
    SLUICE_LOG_ERROR("%s", session.error().c_str());
    return 2;
  }
  transport::LauncherSession* sess = session->get();
  Node* n = node->get();
  MemberRuntime member(g, sess->peers(), env->rank, n, opts);
  member.declare_channels();
  // The launcher's reports, on the progress thread: members that joined get endpoints and
  // channels; members that failed are lost at once (no need to wait for heartbeats).
  n->watch_fd(sess->fd(), [sess, n]() {
    auto events = sess->poll();
    if (!events) {  // the launcher closed the connection, or broke the protocol: heartbeats remain
      SLUICE_LOG_INFO("no more reports from the launcher: %s", events.error().c_str());
      return false;
    }
    for (const auto& p : events->joined) n->add_peer(p);
    for (const auto& e : events->exits) {
      std::string how = e.signal != 0 ? "was killed by signal " + std::to_string(e.signal)
                                      : "exited with status " + std::to_string(e.status);
      if (e.signal == 0 && e.status == 0) {
        n->peer_left(e.rank);
      } else {
        n->mark_peer_lost(
            e.rank, "the launcher reports that " + rank_name(sess->peers(), e.rank) + " " + how);
      }
    }
    return true;
  });
  if (auto s = n->connect(sess->peers(), env->joined); !s) {
    SLUICE_LOG_ERROR("%s", s.error().c_str());
    return 2;
  }
  // A late member sends nothing before every peer has heard of it (a frame from a rank it does
  // not know would be refused).
  if (env->joined) n->await_greetings(std::chrono::milliseconds(opts.transport.peer_timeout_ms));
  bool ok = (*place)->execute([&member] { return member.run(); });
  n->shutdown();
  auto edges = member.edge_stats();
  if (opts.stats) print_stats(member.name(), *n, member.roster(), edges);
  if (!opts.stats_json.empty())
    write_stats_json(opts.stats_json, member.name(), n, member.roster(), edges);
  return ok ? 0 : 1;
}

}  // namespace

int run(const FlowBuilder& fb, int argc, char** argv) {
  auto opts = transport::parse_run_options(argc, argv);
  if (!opts) {
    std::fprintf(stderr, "sluice: error: %s\n", opts.error().c_str());
    return 2;
  }
  if (opts->help) {
    std::fputs(transport::run_options_help(), stdout);
    return 0;
  }
  if (opts->verbose) set_log_level(LogLevel::kInfo);
  const ir::Graph& g = fb.graph();
  if (!opts->dump_graph.empty()) {  // show what was built, run nothing
    const std::string text = opts->dump_graph == "dot"       ? g.dump_dot()
                             : opts->dump_graph == "mermaid" ? g.dump_mermaid()
                                                             : g.dump();
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  if (opts->verbose) std::fprintf(stderr, "sluice: flow:\n%s", g.dump().c_str());
  if (auto s = g.check(); !s) {
    std::fprintf(stderr, "sluice: error: %s\n", s.error().c_str());
    return 2;
  }
  StopSignals signals;
  try {
    int code = transport::LauncherEnv::present() ? run_member(g, *opts) : run_embedded(g, *opts);
    return StopSignals::exit_code_or(code);
  } catch (const std::exception& e) {
    // User code threw inside the graph: report it as one line instead of terminating.
    SLUICE_LOG_ERROR("unhandled exception: %s", e.what());
    return 1;
  }
}

}  // namespace sluice
