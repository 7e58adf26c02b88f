// Two or three members in one process, connected over real UCX endpoints, for each transport.
#include <gtest/gtest.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include <unistd.h>

#include "shared_segment.hpp"
#include "sluice/transport/node.hpp"

namespace sluice::transport {
namespace {

using std::chrono::milliseconds;

struct Mode {
  TransportKind kind;
  ProgressMode progress;
};

// A raw UCX worker that speaks whatever bytes a test wants, posing as a member of the job.
class Rogue {
 public:
  explicit Rogue(TransportKind kind) {
    ucp_config_t* cfg;
    EXPECT_EQ(ucp_config_read(nullptr, nullptr, &cfg), UCS_OK);
    ucp_config_modify(cfg, "TLS", kind == TransportKind::kTcp ? "tcp,self" : "sm,self");
    if (kind == TransportKind::kTcp) ucp_config_modify(cfg, "NET_DEVICES", "lo");
    ucp_params_t p{};
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features = UCP_FEATURE_AM;
    EXPECT_EQ(ucp_init(&p, cfg, &ctx_), UCS_OK);
    ucp_config_release(cfg);
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    EXPECT_EQ(ucp_worker_create(ctx_, &wp, &worker_), UCS_OK);
    for (unsigned id : {1u, 2u}) {  // swallow whatever the job sends us
      ucp_am_handler_param_t hp{};
      hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                      UCP_AM_HANDLER_PARAM_FIELD_ARG;
      hp.id = id;
      hp.cb = [](void*, const void*, size_t, void*, size_t, const ucp_am_recv_param_t*) {
        return UCS_OK;
      };
      hp.arg = nullptr;
      ucp_worker_set_am_recv_handler(worker_, &hp);
    }
  }
  ~Rogue() {
    if (ep_ != nullptr) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      auto r = ucp_ep_close_nbx(ep_, &p);
      while (UCS_PTR_IS_PTR(r) && ucp_request_check_status(r) == UCS_INPROGRESS) progress();
      if (UCS_PTR_IS_PTR(r)) ucp_request_free(r);
    }
    ucp_worker_destroy(worker_);
    ucp_cleanup(ctx_);
  }
  std::vector<uint8_t> address() {
    ucp_address_t* a;
    size_t len;
    EXPECT_EQ(ucp_worker_get_address(worker_, &a, &len), UCS_OK);
    std::vector<uint8_t> out(reinterpret_cast<uint8_t*>(a), reinterpret_cast<uint8_t*>(a) + len);
    ucp_worker_release_address(worker_, a);
    return out;
  }
  void connect(const std::vector<uint8_t>& addr) {
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    p.address = reinterpret_cast<const ucp_address_t*>(addr.data());
    ASSERT_EQ(ucp_ep_create(worker_, &p, &ep_), UCS_OK);
  }
  // Sends and waits for completion, driving `also` too (the receiving nodes in spin mode).
  void send(unsigned id, const void* header, size_t hlen, const void* data, size_t len) {
    ucp_request_param_t p{};
    auto r = ucp_am_send_nbx(ep_, id, header, hlen, data, len, &p);
    while (UCS_PTR_IS_PTR(r) && ucp_request_check_status(r) == UCS_INPROGRESS) {
      progress();
      if (also) also();
    }
    if (UCS_PTR_IS_PTR(r)) ucp_request_free(r);
  }
  std::function<void()> also;
  void progress() { ucp_worker_progress(worker_); }

 private:
  ucp_context_h ctx_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
};

// The AM header of a split frame: `h` (its prefix field set to the prefix's size), then the
// frame's first bytes.
std::vector<uint8_t> split_header(FrameHeader h, std::span<const uint8_t> prefix) {
  h.prefix = static_cast<uint32_t>(prefix.size());
  std::vector<uint8_t> out(sizeof h + prefix.size());
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, prefix.data(), prefix.size());
  return out;
}

class NodeTest : public ::testing::TestWithParam<Mode> {
 protected:
  // Creates `n` nodes of one job; `setup` declares channels before they connect.
  void make_job(uint32_t n, TransportOptions opts,
                const std::function<void(uint32_t, Node&)>& setup, uint32_t job_size = 0) {
    opts.kind = GetParam().kind;
    opts.progress = GetParam().progress;
    job_size_ = job_size == 0 ? n : job_size;
    for (uint32_t r = 0; r < n; ++r) {
      auto node = Node::create(opts, r, job_size_, "test-job", "m" + std::to_string(r));
      ASSERT_TRUE(node) << node.error();
      setup(r, **node);
      nodes_.push_back(std::move(*node));
    }
  }
  std::vector<PeerInfo> table(const std::vector<std::vector<uint8_t>>& extra = {}) {
    std::vector<PeerInfo> peers;
    for (uint32_t r = 0; r < job_size_; ++r) {
      PeerInfo p;
      p.rank = r;
      p.location = "m";
      p.member = r;
      p.address = r < nodes_.size() ? nodes_[r]->worker_address() : extra.at(r - nodes_.size());
      peers.push_back(p);
    }
    return peers;
  }
  void connect_all(const std::vector<PeerInfo>& peers) {
    for (auto& n : nodes_) {
      auto s = n->connect(peers);
      ASSERT_TRUE(s) << s.error();
    }
  }
  // Takes frames of `edge` on `node` until `pred` holds or 20 s pass (a watchdog, not a bar).
  bool take_until(Node& node, uint32_t edge, std::vector<RxFrame>& got,
                  const std::function<bool()>& pred) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!pred()) {
      progress_all();
      uint64_t seen = node.activity();
      if (node.take(edge, got, 1024) > 0) continue;
      if (std::chrono::steady_clock::now() > deadline) return false;
      node.wait_activity(seen, milliseconds(50));
    }
    return true;
  }

  // Members leave together, as processes of a job do: each one's shutdown flushes to the
  // others, which (in spin mode) only progress while their own shutdown runs.
  void TearDown() override {
    std::vector<std::thread> leaving;
    for (auto& n : nodes_) leaving.emplace_back([&n] { n->shutdown(); });
    for (auto& t : leaving) t.join();
  }

  // One node that expects edge 0 from rank 1, a raw peer the test speaks through (job of 2).
  std::unique_ptr<Rogue> node_with_rogue() {
    constexpr uint32_t kRogue = 1;
    make_job(
        1, {}, [](uint32_t, Node& n) { n.expect_input(0, kRogue); }, /*job_size=*/2);
    auto rogue = std::make_unique<Rogue>(GetParam().kind);
    rogue->also = [this] { progress_all(); };
    connect_all(table({rogue->address()}));
    rogue->connect(nodes_[0]->worker_address());
    return rogue;
  }

  // Takes frames of edge 0 at `rx` until one arrived, driving the rogue meanwhile (watchdog).
  bool take_from_rogue(Node& rx, Rogue& rogue, std::vector<RxFrame>& got) {
    return take_until(rx, 0, got, [&] {
      rogue.progress();
      return !got.empty();
    });
  }

  // Spin mode has no progress thread: the test drives every node it owns (no-op when adaptive).
  void progress_all() {
    for (auto& n : nodes_) n->progress();
  }

  uint32_t job_size_ = 0;
  std::vector<std::unique_ptr<Node>> nodes_;
};

int64_t value_at(const RxFrame& f, uint32_t i) {
  int64_t v;
  std::memcpy(&v, f.elements().data() + 8 * i, 8);
  return v;
}

SendStatus send_values(Node& n, uint32_t edge, uint32_t dst, int64_t first, uint32_t count) {
  return n.send_data(edge, dst, 1, count, 8u * count, [&](uint8_t* p) {
    for (uint32_t i = 0; i < count; ++i) {
      int64_t v = first + i;
      std::memcpy(p + 8 * i, &v, 8);
    }
  });
}

TEST_P(NodeTest, FramesArriveInOrderExactlyOnceAndCloseDrains) {
  make_job(2, {}, [](uint32_t r, Node& n) {
    if (r == 0) n.declare_output(0, 1);
    if (r == 1) n.expect_input(0, 0);
  });
  connect_all(table());
  Node& tx = *nodes_[0];
  Node& rx = *nodes_[1];
  constexpr int kFrames = 300;
  std::thread sender([&] {
    for (int i = 0; i < kFrames; ++i) {
      uint32_t count = static_cast<uint32_t>(1 + i % 17);
      ASSERT_EQ(send_values(tx, 0, 1, int64_t{i} * 100, count), SendStatus::kOk);
    }
    tx.close_output(0, 1);
  });
  std::vector<RxFrame> got;
  ASSERT_TRUE(take_until(rx, 0, got, [&] { return rx.input_finished(0); }));
  sender.join();
  ASSERT_EQ(got.size(), static_cast<size_t>(kFrames));
  for (int i = 0; i < kFrames; ++i) {
    EXPECT_EQ(got[i].view().seq, static_cast<uint64_t>(i + 1));
    ASSERT_EQ(got[i].count(), static_cast<uint32_t>(1 + i % 17));
    for (uint32_t k = 0; k < got[i].count(); ++k) EXPECT_EQ(value_at(got[i], k), i * 100 + k);
  }
  got.clear();
  rx.take(0, got, 1);  // acknowledges the close
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!tx.outputs_drained() && std::chrono::steady_clock::now() < deadline) {
    progress_all();
    uint64_t seen = tx.activity();
    tx.wait_activity(seen, milliseconds(50));
  }
  EXPECT_TRUE(tx.outputs_drained());
  EXPECT_EQ(rx.rejected_frames(), 0u);
}

TEST_P(NodeTest, LargeFramesUseRendezvousAndArriveIntact) {
  make_job(2, {}, [](uint32_t r, Node& n) {
    if (r == 0) n.declare_output(0, 1);
    if (r == 1) n.expect_input(0, 0);
  });
  connect_all(table());
  constexpr uint32_t kCount = 1 << 18;  // 2 MiB per frame
  std::thread sender([&] {
    for (int i = 0; i < 4; ++i)
      ASSERT_EQ(send_values(*nodes_[0], 0, 1, i, kCount), SendStatus::kOk);
  });
  std::vector<RxFrame> got;
  ASSERT_TRUE(take_until(*nodes_[1], 0, got, [&] { return got.size() == 4; }));
  sender.join();
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(got[i].count(), kCount);
    EXPECT_EQ(value_at(got[i], 0), i);
    EXPECT_EQ(value_at(got[i], kCount - 1), i + kCount - 1);
  }
}

TEST_P(NodeTest, GatherFramesSendHolesFromTheirSourceAndArriveContiguous) {
  make_job(2, {}, [](uint32_t r, Node& n) {
    if (r == 0) n.declare_output(0, 1);
    if (r == 1) n.expect_input(0, 0);
  });
  connect_all(table());
  // Two payloads that never get copied into the frame, between small inline parts; one large
  // enough for rendezvous, one small enough to go eagerly.
  for (size_t payload : {size_t{256} * 1024, size_t{3000}}) {
    auto a = std::make_shared<std::vector<uint8_t>>(payload, 0xaa);
    auto b = std::make_shared<std::vector<uint8_t>>(payload, 0xbb);
    auto keep = std::make_shared<std::pair<decltype(a), decltype(b)>>(a, b);
    size_t bytes = 8 + payload + 8 + payload + 8;
    ASSERT_EQ(nodes_[0]->send_data(
                  0, 1, 1, 2, bytes,
                  [&](uint8_t* p, std::vector<FrameHole>& holes) {
                    std::memset(p, 0x11, 8);
                    holes.push_back({p + 8, a->data(), payload});
                    std::memset(p + 8 + payload, 0x22, 8);
                    holes.push_back({p + 16 + payload, b->data(), payload});
                    std::memset(p + 16 + 2 * payload, 0x33, 8);
                  },
                  keep),
              SendStatus::kOk);
    keep.reset();  // the node keeps the sources alive until the send completes
    a.reset();
    b.reset();
    std::vector<RxFrame> got;
    ASSERT_TRUE(take_until(*nodes_[1], 0, got, [&] { return !got.empty(); }));
    auto e = got[0].elements();
    ASSERT_EQ(e.size(), bytes);
    EXPECT_EQ(e[0], 0x11);
    EXPECT_EQ(e[8], 0xaa);
    EXPECT_EQ(e[7 + payload], 0xaa);
    EXPECT_EQ(e[8 + payload], 0x22);
    EXPECT_EQ(e[16 + payload], 0xbb);
    EXPECT_EQ(e[15 + 2 * payload], 0xbb);
    EXPECT_EQ(e[16 + 2 * payload], 0x33);
    EXPECT_EQ(static_cast<size_t>(std::count(e.begin(), e.end(), uint8_t{0xaa})), payload);
  }
}

TEST_P(NodeTest, FrameWhoseOneHoleEndsItGoesSplitAndArrivesWhole) {
  make_job(2, {}, [](uint32_t r, Node& n) {
    if (r == 0) n.declare_output(0, 1);
    if (r == 1) n.expect_input(0, 0);
  });
  connect_all(table());
  // A small inline part, then one hole to the end: the frame goes split (its prefix in the AM
  // header, the hole as a contiguous payload). Element sizes that are not a multiple of 8 leave
  // FlatBuffers padding after the hole, which the receiver restores. Eager and rendezvous sizes.
  for (size_t payload : {size_t{1} << 20, size_t{300} * 1024 + 3, size_t{1000}, size_t{61}}) {
    auto a = std::make_shared<std::vector<uint8_t>>(payload);
    for (size_t i = 0; i < payload; ++i) (*a)[i] = static_cast<uint8_t>(i * 7 + 1);
    size_t bytes = 16 + payload;
    ASSERT_EQ(nodes_[0]->send_data(
                  0, 1, 1, 1, bytes,
                  [&](uint8_t* p, std::vector<FrameHole>& holes) {
                    std::memset(p, 0x11, 16);
                    holes.push_back({p + 16, a->data(), payload});
                  },
                  a, std::chrono::microseconds::max(), /*split=*/true),
              SendStatus::kOk);
    auto expected = *a;
    a.reset();  // the node keeps the source alive until the send completes
    std::vector<RxFrame> got;
    ASSERT_TRUE(take_until(*nodes_[1], 0, got, [&] { return !got.empty(); }));
    auto e = got[0].elements();
    ASSERT_EQ(e.size(), bytes) << payload;
    EXPECT_EQ(std::count(e.begin(), e.begin() + 16, uint8_t{0x11}), 16) << payload;
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), e.begin() + 16)) << payload;
  }
  // Over tcp frames never go split (see Node::Impl::split_lanes); they arrive whole all the same.
  EXPECT_EQ(nodes_[0]->stats()[1].frames_split, GetParam().kind == TransportKind::kTcp ? 0u : 4u);
}

TEST_P(NodeTest, SplitFrameWhoseHoleIsAllItsElementsHandsThemOverInTheirOwnBuffer) {
  // The runtime's broadcast frames: one hole that is the whole element vector. The receiver keeps
  // those elements in a buffer of their own, which the consumer may take (a batch adopts it).
  make_job(2, {}, [](uint32_t r, Node& n) {
    if (r == 0) n.declare_output(0, 1);
    if (r == 1) n.expect_input(0, 0);
  });
  connect_all(table());
  for (size_t payload : {size_t{1} << 20, size_t{4096}}) {
    auto a = std::make_shared<std::vector<uint8_t>>(payload);
    for (size_t i = 0; i < payload; ++i) (*a)[i] = static_cast<uint8_t>(i * 5 + 3);
    ASSERT_EQ(nodes_[0]->send_data(
                  0, 1, 1, static_cast<uint32_t>(payload), payload,
                  [&](uint8_t* p, std::vector<FrameHole>& holes) {
                    holes.push_back({p, a->data(), payload});
                  },
                  a, std::chrono::microseconds::max(), /*split=*/true),
              SendStatus::kOk);
    std::vector<RxFrame> got;
    ASSERT_TRUE(take_until(*nodes_[1], 0, got, [&] { return !got.empty(); }));
    ASSERT_EQ(got[0].elements().size(), payload);
    EXPECT_TRUE(std::equal(a->begin(), a->end(), got[0].elements().begin()));
    PooledBuffer mem = got[0].take_elements();
    if (GetParam().kind == TransportKind::kTcp) {
      EXPECT_FALSE(mem) << "over tcp frames are not split: their elements are inside the frame";
      continue;
    }
    ASSERT_TRUE(mem);
    EXPECT_TRUE(got[0].elements().empty());
    EXPECT_EQ(mem.get_deleter().size_class, pool_deleter_for(payload).size_class);
    EXPECT_EQ(0, std::memcmp(mem.get(), a->data(), payload));
  }
  EXPECT_EQ(nodes_[1]->rejected_frames(), 0u);
}

TEST_P(NodeTest, BroadcastPayloadsInTheSharedSegmentReachEveryMemberByName) {
  // Node 0 encodes each payload once into its shared segment; nodes 1 and 2 (same host) copy it
  // out themselves. Two blocks carry twelve frames: a block comes back once both copied it and
  // the sender dropped it. Over tcp there is no segment (tcp only, as asked).
  constexpr size_t kBlock = 256 * 1024;
  make_job(3, {}, [](uint32_t r, Node& n) {
    if (r == 0) {
      n.share_broadcast_memory(kBlock, 2);
      n.declare_output(0, 1);
      n.declare_output(0, 2);
    } else {
      n.expect_input(0, 0);
    }
  });
  connect_all(table());
  const bool tcp = GetParam().kind == TransportKind::kTcp;
  // Both peers mapped the segment before anything is sent (watchdog only).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto mapped = [&] {
    auto st = nodes_[0]->stats();
    return st[1].maps_shared && st[2].maps_shared;
  };
  while (!tcp && !mapped() && std::chrono::steady_clock::now() < deadline) {
    progress_all();
    std::this_thread::yield();
  }
  ASSERT_EQ(mapped(), !tcp);
  // Waits (watchdog only) for a free block: the peers release each block once they copied it.
  auto block = [&](size_t bytes) {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    std::shared_ptr<uint8_t> b;
    while (!tcp && !(b = nodes_[0]->shared_buffer(bytes)) &&
           std::chrono::steady_clock::now() < until) {
      progress_all();
      std::this_thread::yield();
    }
    return b;
  };
  constexpr int kFrames = 12;
  for (int i = 0; i < kFrames; ++i) {
    const size_t payload = i % 2 == 0 ? kBlock : size_t{1000} + static_cast<size_t>(i);
    std::shared_ptr<uint8_t> buf = block(payload);
    ASSERT_EQ(buf == nullptr, tcp) << "frame " << i;
    if (tcp) buf = std::shared_ptr<uint8_t>(new uint8_t[payload], std::default_delete<uint8_t[]>());
    for (size_t k = 0; k < payload; ++k) buf.get()[k] = static_cast<uint8_t>(k * 31 + i);
    const size_t bytes = 16 + payload;
    for (uint32_t dst : {1u, 2u}) {
      ASSERT_EQ(nodes_[0]->send_data(
                    0, dst, 1, 1, bytes,
                    [&](uint8_t* p, std::vector<FrameHole>& holes) {
                      std::memset(p, 0x11, 16);
                      holes.push_back({p + 16, buf.get(), payload});
                    },
                    buf, std::chrono::microseconds::max(), /*split=*/true),
                SendStatus::kOk);
    }
    std::vector<uint8_t> expected(buf.get(), buf.get() + payload);
    buf.reset();  // the frames keep it until sent; the peers' bits until they copied it
    for (uint32_t dst : {1u, 2u}) {
      std::vector<RxFrame> got;
      ASSERT_TRUE(take_until(*nodes_[dst], 0, got, [&] { return !got.empty(); }));
      auto e = got[0].elements();
      ASSERT_EQ(e.size(), bytes) << "frame " << i << " at node " << dst;
      EXPECT_EQ(std::count(e.begin(), e.begin() + 16, uint8_t{0x11}), 16);
      EXPECT_TRUE(std::equal(expected.begin(), expected.end(), e.begin() + 16))
          << "frame " << i << " at node " << dst;
    }
  }
  for (uint32_t dst : {1u, 2u}) {
    const auto st = nodes_[0]->stats()[dst];
    EXPECT_EQ(st.frames_shared, tcp ? 0u : static_cast<uint64_t>(kFrames)) << dst;
    EXPECT_EQ(nodes_[dst]->rejected_frames(), 0u);
  }
}

TEST_P(NodeTest, MemberThatJoinsLaterGetsChannelsBothWays) {
  // Nodes 0 and 1 run; node 2 (location "j") joins later. The launcher's word of it reaches the
  // running nodes through a watched fd, as in a real job, so add_peer runs on their progress
  // threads while the test's thread uses the nodes.
  int pipes[2][2];
  ASSERT_EQ(::pipe(pipes[0]), 0);
  ASSERT_EQ(::pipe(pipes[1]), 0);
  PeerInfo joiner;
  make_job(2, {}, [&](uint32_t r, Node& n) {
    if (r == 0) {
      n.declare_output(0, 1);
      n.accept_joiners("j", /*in_edges=*/{1}, /*out_edges=*/{0});
    }
    if (r == 1) n.expect_input(0, 0);
    int fd = pipes[r][0];
    n.watch_fd(fd, [fd, &n, &joiner] {
      char c;
      if (::read(fd, &c, 1) != 1) return false;
      n.add_peer(joiner);
      return true;
    });
  });
  connect_all(table());
  TransportOptions opts;
  opts.kind = GetParam().kind;
  opts.progress = GetParam().progress;
  auto late = Node::create(opts, 2, 3, "test-job", "j/0");
  ASSERT_TRUE(late) << late.error();
  Node& j = **late;
  j.expect_input(0, 0);
  j.declare_output(1, 0);
  auto peers = table();
  joiner.rank = 2;
  joiner.location = "j";
  joiner.member = 0;
  joiner.address = j.worker_address();
  peers.push_back(joiner);
  ASSERT_TRUE(j.connect(peers, /*late=*/true));
  nodes_.push_back(std::move(*late));
  // The launcher tells the running members; the late one waits for their greetings.
  std::atomic<bool> greeted{false};
  std::thread wait([&] {
    j.await_greetings(std::chrono::seconds(10));
    greeted = true;
  });
  for (auto& p : pipes) EXPECT_EQ(::write(p[1], "j", 1), 1);  // (no ASSERT: `wait` runs)
  std::vector<PeerInfo> seen;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((!greeted || seen.empty()) && std::chrono::steady_clock::now() < deadline) {
    progress_all();
    auto more = nodes_[0]->take_joined();
    seen.insert(seen.end(), more.begin(), more.end());
    std::this_thread::yield();
  }
  wait.join();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].rank, 2u);
  EXPECT_EQ(nodes_[0]->job_size(), 3u);
  EXPECT_FALSE(j.peer_lost(0));
  EXPECT_FALSE(j.peer_lost(1));  // greeted too, though it has no channel with the late member
  // Both directions work: node 0 -> late member on edge 0, late member -> node 0 on edge 1.
  ASSERT_EQ(send_values(*nodes_[0], 0, 2, 100, 4), SendStatus::kOk);
  ASSERT_EQ(send_values(j, 1, 0, 200, 4), SendStatus::kOk);
  std::vector<RxFrame> at_late, at_zero;
  ASSERT_TRUE(take_until(j, 0, at_late, [&] { return !at_late.empty(); }));
  ASSERT_TRUE(take_until(*nodes_[0], 1, at_zero, [&] { return !at_zero.empty(); }));
  EXPECT_EQ(value_at(at_late[0], 3), 103);
  EXPECT_EQ(value_at(at_zero[0], 0), 200);
  EXPECT_EQ(nodes_[1]->rejected_frames(), 0u);
  // The pipes stay open while the nodes watch them (TearDown shuts the nodes down); four
  // descriptors for the rest of the test binary.
}

TEST_P(NodeTest, SlowReceiverPushesBackOnTheSender) {
  TransportOptions opts;
  opts.window_bytes = 64 * 1024;
  make_job(2, opts, [](uint32_t r, Node& n) {
    if (r == 0) n.declare_output(0, 1);
    if (r == 1) n.expect_input(0, 0);
  });
  connect_all(table());
  constexpr uint32_t kPerFrame = 2048;  // 16 KiB of elements per frame
  constexpr int kFrames = 40;
  std::atomic<int> sent{0};
  std::thread sender([&] {
    for (int i = 0; i < kFrames; ++i) {
      ASSERT_EQ(send_values(*nodes_[0], 0, 1, int64_t{i} * kPerFrame, kPerFrame), SendStatus::kOk);
      sent.fetch_add(1);
    }
  });
  // Hold every frame (no credit goes back) until the window's worth has arrived.
  std::vector<RxFrame> held;
  const size_t window_frames = opts.window_bytes / (kPerFrame * 8);
  ASSERT_TRUE(take_until(*nodes_[1], 0, held, [&] { return held.size() >= window_frames - 1; }));
  // The sender cannot be further ahead than the window allows.
  EXPECT_LE(sent.load(), static_cast<int>(window_frames + 1));
  EXPECT_LT(sent.load(), kFrames);
  // Releasing the frames returns credit; everything arrives, in order.
  size_t total = held.size();
  int64_t next = 0;
  auto check_and_drop = [&](std::vector<RxFrame>& v) {
    for (auto& f : v) {
      EXPECT_EQ(value_at(f, 0), next);
      next += kPerFrame;
    }
    v.clear();
  };
  check_and_drop(held);
  std::vector<RxFrame> more;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (total < static_cast<size_t>(kFrames) && std::chrono::steady_clock::now() < deadline) {
    progress_all();
    uint64_t seen = nodes_[1]->activity();
    size_t n = nodes_[1]->take(0, more, 1024);
    total += n;
    check_and_drop(more);
    if (n == 0) nodes_[1]->wait_activity(seen, milliseconds(50));
  }
  sender.join();
  EXPECT_EQ(total, static_cast<size_t>(kFrames));
}

// Drives the rogue and the job until `rx` rejected `n` frames, or 20 s pass (a watchdog).
void await_rejections(Node& rx, Rogue& rogue, uint64_t n) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (rx.rejected_frames() < n && std::chrono::steady_clock::now() < deadline) {
    rogue.progress();
    if (rogue.also) rogue.also();
    uint64_t seen = rx.activity();
    rx.wait_activity(seen, milliseconds(10));
  }
}

TEST_P(NodeTest, MalformedFramesAreRejectedAndTheReceiverKeepsRunning) {
  constexpr uint32_t kRogue = 2;
  make_job(
      2, {},
      [](uint32_t r, Node& n) {
        if (r == 0) n.declare_output(0, 1);
        if (r == 1) {
          n.expect_input(0, 0);
          n.expect_input(0, kRogue);
        }
      },
      /*job_size=*/3);
  Rogue rogue(GetParam().kind);
  rogue.also = [this] { progress_all(); };
  connect_all(table({rogue.address()}));
  rogue.connect(nodes_[1]->worker_address());
  Node& rx = *nodes_[1];

  auto frame = [](uint32_t edge, uint32_t src, uint64_t seq, size_t bytes) {
    DataFrameBuilder b(edge, src, 1, seq, 1);
    uint8_t* p = b.reserve_elements(static_cast<uint32_t>(bytes / 8), bytes);
    std::memset(p, 0, bytes);
    return b.finish();
  };
  OwnedFrame good = frame(0, kRogue, 1, 64);
  FrameHeader h = good.header(kRogue);
  // 1. a header of the wrong size
  rogue.send(1, &h, 5, good.bytes().data(), good.bytes().size());
  // 2. a wrong magic
  FrameHeader bad_magic = h;
  bad_magic.magic = 0x12345678;
  rogue.send(1, &bad_magic, sizeof h, good.bytes().data(), good.bytes().size());
  // 3. truncated: the header announces more than arrives
  rogue.send(1, &h, sizeof h, good.bytes().data(), good.bytes().size() - 8);
  // 4. garbage bytes under a well-formed header
  std::vector<uint8_t> junk(good.bytes().size(), 0x5a);
  rogue.send(1, &h, sizeof h, junk.data(), junk.size());
  // 5. a valid frame for an edge the receiver does not have
  OwnedFrame wrong_edge = frame(99, kRogue, 1, 64);
  FrameHeader h5 = wrong_edge.header(kRogue);
  rogue.send(1, &h5, sizeof h5, wrong_edge.bytes().data(), wrong_edge.bytes().size());
  // 6. oversized: more than max_frame_bytes
  TransportOptions defaults;
  std::vector<uint8_t> huge(defaults.max_frame_bytes + 8, 0);
  FrameHeader h6 = h;
  h6.length = huge.size();
  rogue.send(1, &h6, sizeof h6, huge.data(), huge.size());
  // 7. a frame whose header claims another source than the frame itself
  OwnedFrame liar = frame(0, 0, 1, 64);
  FrameHeader h7 = liar.header(kRogue);
  rogue.send(1, &h7, sizeof h7, liar.bytes().data(), liar.bytes().size());
  // 8. split: the header announces a longer prefix than it carries
  const size_t prefix = good.bytes().size() - 64;  // the elements are the last 64 bytes
  std::vector<uint8_t> split(sizeof h + prefix);
  FrameHeader h8 = h;
  h8.prefix = static_cast<uint32_t>(prefix + 8);
  std::memcpy(split.data(), &h8, sizeof h8);
  std::memcpy(split.data() + sizeof h8, good.bytes().data(), prefix);
  rogue.send(1, split.data(), split.size(), good.bytes().data() + prefix, 64);
  // 9. split: the payload falls short of the frame by more than padding
  FrameHeader h9 = h;
  h9.prefix = static_cast<uint32_t>(prefix);
  std::memcpy(split.data(), &h9, sizeof h9);
  rogue.send(1, split.data(), split.size(), good.bytes().data() + prefix, 48);
  // 10. split and well formed, for an edge the receiver does not have: it is put back together
  // and verified, and only then refused for its edge
  OwnedFrame split_wrong_edge = frame(98, kRogue, 1, 64);
  const size_t prefix10 = split_wrong_edge.bytes().size() - 64;
  auto split10 =
      split_header(split_wrong_edge.header(kRogue), split_wrong_edge.bytes().first(prefix10));
  rogue.send(1, split10.data(), split10.size(), split_wrong_edge.bytes().data() + prefix10, 64);

  await_rejections(rx, rogue, 10);
  EXPECT_EQ(rx.rejected_frames(), 10u);

  // The legitimate sender is unaffected.
  ASSERT_EQ(send_values(*nodes_[0], 0, 1, 42, 3), SendStatus::kOk);
  std::vector<RxFrame> got;
  ASSERT_TRUE(take_from_rogue(rx, rogue, got));
  ASSERT_EQ(got[0].src(), 0u);
  EXPECT_EQ(value_at(got[0], 2), 44);
}

TEST_P(NodeTest, SplitFramesFromARawPeerAreReassembledAndDelivered) {
  // Split frames built by hand (not by Node's sender): the receiver puts prefix, payload and the
  // left-out padding back together, eagerly and by rendezvous, with element sizes that leave
  // padding (3 and 5 bytes here).
  constexpr uint32_t kRogue = 1;
  auto rogue_peer = node_with_rogue();
  Rogue& rogue = *rogue_peer;
  Node& rx = *nodes_[0];
  uint64_t seq = 0;
  for (size_t bytes : {size_t{61}, size_t{400} * 1024 + 3}) {
    DataFrameBuilder b(0, kRogue, 0, ++seq, 1);
    uint8_t* p = b.reserve_elements(static_cast<uint32_t>(bytes), bytes);
    for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(i * 13 + seq);
    OwnedFrame f = b.finish();
    auto all = f.bytes();
    const size_t prefix = static_cast<size_t>(p - all.data());
    auto header = split_header(f.header(kRogue), all.first(prefix));
    ASSERT_GT(all.size() - prefix - bytes, 0u);  // padding the receiver must restore
    rogue.send(1, header.data(), header.size(), p, bytes);
    std::vector<RxFrame> got;
    ASSERT_TRUE(take_from_rogue(rx, rogue, got));
    auto e = got[0].elements();
    ASSERT_EQ(e.size(), bytes);
    for (size_t i = 0; i < bytes; ++i) {
      ASSERT_EQ(e[i], static_cast<uint8_t>(i * 13 + seq)) << "byte " << i << " of " << bytes;
    }
  }
  EXPECT_EQ(rx.rejected_frames(), 0u);
}

TEST_P(NodeTest, SharedSegmentFramesFromARawPeerAreCheckedBeforeTheyAreCopied) {
  // A raw peer offers a real segment (made here with the node's own SegmentWriter), then names
  // its blocks: a good frame arrives whole; a block out of range, a size past the block, a
  // stale generation and a frame that also carries a payload are each refused with a reason.
  if (GetParam().kind == TransportKind::kTcp) GTEST_SKIP() << "a tcp member maps no segment";
  constexpr uint32_t kRogue = 1;
  constexpr size_t kBlock = 64 * 1024;
  auto rogue_peer = node_with_rogue();
  Rogue& rogue = *rogue_peer;
  Node& rx = *nodes_[0];
  auto seg = detail::SegmentWriter::create(kBlock, 2, kRogue);
  ASSERT_TRUE(seg) << seg.error();
  ControlMsg offer;
  offer.kind = ControlKind::kSharedOffer;
  offer.src = kRogue;
  offer.dst = 0;
  offer.pid = static_cast<uint32_t>(getpid());
  offer.fd = (*seg)->fd();
  offer.value = (*seg)->mapped_bytes();
  offer.nonce = (*seg)->nonce();
  offer.reader = 0;
  OwnedFrame c = encode_control(offer);
  FrameHeader ch = c.header(kRogue);
  rogue.send(2, &ch, sizeof ch, c.bytes().data(), c.bytes().size());

  constexpr size_t kBytes = 1003;  // leaves 5 bytes of padding to restore
  auto block = (*seg)->allocate(kBytes);
  ASSERT_TRUE(block);
  for (size_t i = 0; i < kBytes; ++i) block.get()[i] = static_cast<uint8_t>(i * 7 + 1);
  SharedFrameRef ref;
  ASSERT_TRUE((*seg)->contains(block.get(), kBytes, &ref.slot, &ref.generation));
  ref.size = kBytes;
  (*seg)->add_reader(ref.slot, 0);
  uint64_t seq = 0;
  // Sends frame `seq` of kBytes elements whose payload the header names by `r`.
  auto send_named = [&](SharedFrameRef r, const std::vector<uint8_t>& payload = {}) {
    DataFrameBuilder b(0, kRogue, 0, ++seq, 1);
    uint8_t* p = b.reserve_elements(static_cast<uint32_t>(kBytes), kBytes);
    OwnedFrame f = b.finish();
    const size_t prefix = static_cast<size_t>(p - f.bytes().data());
    FrameHeader h = f.header(kRogue);
    h.length = prefix + r.size + (f.bytes().size() - prefix - kBytes);
    auto header = split_header(h, f.bytes().first(prefix));
    const auto* named = reinterpret_cast<const uint8_t*>(&r);
    header.insert(header.end(), named, named + sizeof r);
    rogue.send(3, header.data(), header.size(), payload.data(), payload.size());
  };
  send_named(ref);
  std::vector<RxFrame> got;
  ASSERT_TRUE(take_from_rogue(rx, rogue, got));
  auto e = got[0].elements();
  ASSERT_EQ(e.size(), kBytes);
  for (size_t i = 0; i < kBytes; ++i) ASSERT_EQ(e[i], static_cast<uint8_t>(i * 7 + 1)) << i;
  block.reset();
  EXPECT_TRUE((*seg)->allocate(1) && (*seg)->allocate(1)) << "the receiver released its bit";

  SharedFrameRef out_of_range = ref;
  out_of_range.slot = 9;
  send_named(out_of_range);
  SharedFrameRef too_long = ref;
  too_long.size = kBlock + 8;
  send_named(too_long);
  SharedFrameRef stale = ref;
  stale.generation += 1000;
  send_named(stale);
  send_named(ref, std::vector<uint8_t>(8, 0));
  await_rejections(rx, rogue, 4);
  EXPECT_EQ(rx.rejected_frames(), 4u);
  EXPECT_TRUE(rx.input_cut(0)) << "a refused frame leaves a gap: the channel stops";
}

TEST_P(NodeTest, SilentPeerIsLostAndTheBlockedSenderIsReleased) {
  constexpr uint32_t kSilent = 1;
  TransportOptions opts;
  opts.window_bytes = 16 * 1024;
  opts.peer_timeout_ms = 500;
  opts.heartbeat_ms = 50;
  make_job(
      1, opts, [](uint32_t, Node& n) { n.declare_output(0, kSilent); }, /*job_size=*/2);
  Rogue silent(GetParam().kind);  // never answers: no heartbeats, no credit
  connect_all(table({silent.address()}));
  SendStatus last = SendStatus::kOk;
  std::atomic<bool> done{false};
  std::thread sender([&] {
    for (int i = 0; i < 1000 && last == SendStatus::kOk; ++i) {
      last = send_values(*nodes_[0], 0, kSilent, i, 1024);
    }
    done = true;
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done && std::chrono::steady_clock::now() < deadline) {
    silent.progress();
    std::this_thread::yield();
  }
  sender.join();
  EXPECT_EQ(last, SendStatus::kPeerLost);
  EXPECT_TRUE(nodes_[0]->peer_lost(kSilent));
  EXPECT_TRUE(nodes_[0]->outputs_drained()) << "a lost peer owes no acknowledgement";
}

INSTANTIATE_TEST_SUITE_P(Transports, NodeTest,
                         ::testing::Values(Mode{TransportKind::kShm, ProgressMode::kAdaptive},
                                           Mode{TransportKind::kShm, ProgressMode::kSpin},
                                           Mode{TransportKind::kTcp, ProgressMode::kAdaptive},
                                           Mode{TransportKind::kTcp, ProgressMode::kSpin}),
                         [](const auto& param_info) {
                           return std::string(to_string(param_info.param.kind)) + "_" +
                                  to_string(param_info.param.progress);
                         });

TEST(NodeCreate, RdmaWithoutADeviceIsAClearError) {
  TransportOptions opts;
  opts.kind = TransportKind::kRdma;
  auto n = Node::create(opts, 0, 1, "j", "m");
  if (n) GTEST_SKIP() << "this machine has an RDMA device";
  EXPECT_NE(n.error().find("rdma"), std::string::npos) << n.error();
}

}  // namespace
}  // namespace sluice::transport
