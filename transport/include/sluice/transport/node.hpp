// Node: one job member's end of the network — its UCX context, worker and endpoints, the progress
// thread that alone touches them, and the channels that carry frames.
//
// A channel is (edge, src -> dst). Outbound, it numbers frames, holds a window of bytes in flight
// that the receiver's credits reopen, and ends with Close, answered by CloseAck once the receiver
// consumed everything. Inbound, it checks each frame (verifier, ids, sequence) and keeps its UCX
// descriptor until the consumer drops the RxFrame (zero-copy receive). Failures — a peer that
// falls silent, an endpoint error, a launcher report — mark the peer lost: its inbound channels
// end with what arrived (a prefix) and sends to it return kPeerLost instead of blocking.
//
// Members added to a running job (sluice-run --join) join later: add_peer() gives the node an
// endpoint and the channels accept_joiners() declared for the newcomer's location, and the
// runtime learns of it through take_joined(). A late member itself gets the table of every rank
// up to its own (those that ended marked gone) and waits in await_greetings() until every live
// peer greeted it, so nobody receives a frame from a member it has not heard of.
//
// Threads: create/expect/declare/connect/shutdown from the owner's thread; send/close/take/wait
// from one runtime thread; everything that touches UCX runs on the progress thread. In spin
// mode there is no progress thread: the runtime's thread drives progress itself (in progress(),
// wait_activity() and send_data(), serialized by a mutex), so the data path has no thread
// handoff; the owner must then call progress() regularly, even while it has work. A sleeping
// keepalive thread steps in only when nobody progressed for half a heartbeat period (a long
// tick of user code), so heartbeats and credits still flow.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "sluice/transport/bootstrap.hpp"
#include "sluice/transport/buffer_pool.hpp"
#include "sluice/transport/frame.hpp"
#include "sluice/transport/options.hpp"
#include "sluice/transport/result.hpp"

namespace sluice::transport {

class Node;

// A received, verified data frame. Keeps the receive buffer alive; dropping it releases the
// buffer and returns credit to the sender.
class RxFrame {
 public:
  RxFrame() = default;
  RxFrame(RxFrame&& o) noexcept { *this = std::move(o); }
  RxFrame& operator=(RxFrame&& o) noexcept;
  ~RxFrame() { reset(); }
  void reset();

  const DataFrameView& view() const { return view_; }
  std::span<const uint8_t> elements() const { return view_.elements; }
  uint32_t count() const { return view_.count; }
  uint32_t src() const { return view_.src; }

  // Shared ownership of the memory that holds the elements, so decoded values may point into it
  // after the frame is released (zero-copy elements). Only for memory we own (rendezvous and
  // split frames, which are the large ones); null for a UCX descriptor, which must go back to
  // UCX now.
  std::shared_ptr<const void> share();
  // A split frame's elements sit at the start of a buffer of their own, from
  // pool_allocate(elements().size()): the caller may take it (a batch adopts it instead of
  // copying). Empty otherwise, or once shared. Afterwards elements() is empty.
  PooledBuffer take_elements();

 private:
  friend class Node;
  Node* node_ = nullptr;
  void* ucx_data_ = nullptr;  // UCX persistent descriptor, released on the progress thread
  PooledBuffer heap_;         // or a buffer we own (rendezvous, realigned copies, a prefix)
  PooledBuffer elements_;     // a split frame's elements
  std::shared_ptr<const void> shared_;  // heap_ or elements_, once shared
  size_t wire_bytes_ = 0;               // what the sender's window counted
  DataFrameView view_;
};

enum class SendStatus { kOk, kWouldBlock, kPeerLost, kShutdown };

struct PeerStats {
  uint64_t frames_sent = 0, bytes_sent = 0, frames_received = 0, bytes_received = 0;
  uint64_t frames_rejected = 0;
  uint64_t frames_split = 0;   // sent split: prefix in the AM header, one contiguous payload
  uint64_t frames_shared = 0;  // sent split with the payload left in our shared segment
  uint64_t blocked_ns = 0;     // time senders waited for window
  std::string lanes;           // transports UCX chose for the endpoint
  bool lost = false;
  bool maps_shared = false;  // it mapped our shared segment: frames may name its blocks
  std::string lost_reason;
};

class Node {
 public:
  // Creates the UCX context and worker for member `self_rank` of a job of `job_size` ranks.
  // `rdma` with no RDMA device, or a transport list UCX cannot satisfy, is an error.
  static Result<std::unique_ptr<Node>> create(const TransportOptions& opts, uint32_t self_rank,
                                              uint32_t job_size, std::string job_id,
                                              std::string name);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  uint32_t rank() const;
  const std::string& name() const;
  std::vector<uint8_t> worker_address() const;

  // Before connect(): the channels this member will use.
  void expect_input(uint32_t edge, uint32_t src);
  void declare_output(uint32_t edge, uint32_t dst);
  // Before connect(): the channels to give a member of `location` that joins later — inputs
  // from it on `in_edges`, outputs to it on `out_edges`.
  void accept_joiners(const std::string& location, std::vector<uint32_t> in_edges,
                      std::vector<uint32_t> out_edges);

  // Before connect(): a segment of `blocks` blocks of `block_bytes` (a memfd) that payloads sent
  // to several members (broadcast) may be encoded into once, with shared_buffer(). It is offered
  // to every peer; those on this host map it and copy a frame's payload out of it themselves
  // when the frame names its block, instead of each pulling it through the kernel (CMA). A
  // segment that cannot be made costs speed, not data: logged, and frames go by UCX alone.
  void share_broadcast_memory(size_t block_bytes, uint32_t blocks);
  // Runtime thread: `bytes` in a free block of that segment, or null (no segment, no peer mapped
  // it, too large, or every block still in use). A frame whose one hole lies in it and is sent
  // split goes by name to the peers that mapped the segment, by UCX to the others. The block is
  // reused once the pointer and every frame that named it are done.
  std::shared_ptr<uint8_t> shared_buffer(size_t bytes);

  // Creates endpoints to every other rank in `peers` (indexed by rank; a late member's table may
  // be longer than the job size given to create()), says hello, starts the progress thread.
  // Peers marked gone get no endpoint: they count as lost, and their channels into this member
  // as closed before any frame. `late`: this member joined a running job (see await_greetings).
  Status connect(const std::vector<PeerInfo>& peers, bool late = false);

  // A late member, after connect(): waits until every live peer greeted it (it learned of this
  // member and made its endpoint and channels), at most `timeout`; one that did not is lost.
  void await_greetings(std::chrono::milliseconds timeout);

  // A member joined the running job (its rank is the next one): endpoint, hello, the channels
  // accept_joiners() named; one marked gone (it ended before it registered) only takes its rank.
  // Call on the progress thread, i.e. from a watch_fd callback.
  void add_peer(const PeerInfo& peer);
  // The members add_peer() added since the last call (runtime thread).
  std::vector<PeerInfo> take_joined();
  uint32_t job_size() const;

  // Calls `on_readable` on the progress thread whenever `fd` is readable (e.g. the launcher's
  // connection); it returns false to stop watching. Before connect() only.
  void watch_fd(int fd, std::function<bool()> on_readable);

  // ---- sending (one runtime thread) ----
  // Sends one data frame of `count` elements whose encoding takes `bytes`; `encode` writes them
  // into the frame in place. Blocks while the channel's window is full.
  SendStatus send_data(uint32_t edge, uint32_t dst, uint64_t tick, uint32_t count, size_t bytes,
                       const std::function<void(uint8_t*)>& encode);
  // The same, where `encode` may leave holes (FrameHole) that are sent straight from their
  // source memory; `keepalive` keeps those sources alive until the send completes. A window
  // still full after `max_wait` returns kWouldBlock (nothing was sent), so a caller that must
  // keep consuming its own inputs never waits on a peer for long. `split`: the same payload goes
  // to several destinations (see OwnedFrame::set_split).
  SendStatus send_data(uint32_t edge, uint32_t dst, uint64_t tick, uint32_t count, size_t bytes,
                       const std::function<void(uint8_t*, std::vector<FrameHole>&)>& encode,
                       std::shared_ptr<const void> keepalive,
                       std::chrono::microseconds max_wait = std::chrono::microseconds::max(),
                       bool split = false);
  // Ends the channel: the receiver sees end-of-stream after every frame sent so far.
  void close_output(uint32_t edge, uint32_t dst);
  // True once every closed output was acknowledged (or its peer was lost).
  bool outputs_drained() const;

  // ---- receiving (one runtime thread) ----
  // Moves ready frames of `edge` into `out`, in order per channel: from each channel that has
  // one at least one frame, and more while fewer than `max_frames` and `max_bytes` were taken.
  size_t take(uint32_t edge, std::vector<RxFrame>& out, size_t max_frames,
              size_t max_bytes = SIZE_MAX);
  // True when every channel into `edge` was closed and drained, or its sender lost.
  bool input_finished(uint32_t edge) const;
  // True when some channel into `edge` ended without its sender's Close (sender lost, or a
  // sequence gap): what arrived is a prefix.
  bool input_cut(uint32_t edge) const;

  // Activity: a counter bumped by every frame, credit, close or failure. Read it, look for work,
  // then wait with what was read: nothing that happens in between is missed. Spins (yielding)
  // in spin mode. Returns true if the counter moved.
  uint64_t activity() const;
  bool wait_activity(uint64_t seen, std::chrono::microseconds timeout);

  // Spin mode: one pass of the progress engine on the calling thread. No-op in adaptive mode.
  void progress();

  // Marks a peer lost from outside (e.g. the launcher reported its exit).
  void mark_peer_lost(uint32_t rank, const std::string& reason);
  // The launcher reports a peer exited 0. It may have finished while this member joined, never
  // hearing of it: channels from it that the join made and that are still empty end empty, and
  // await_greetings() stops waiting for it.
  void peer_left(uint32_t rank);
  bool peer_lost(uint32_t rank) const;

  // Says goodbye to every peer, flushes and closes endpoints, stops the progress thread.
  // Idempotent; the destructor calls it.
  void shutdown();

  std::vector<PeerStats> stats() const;  // indexed by rank
  uint64_t rejected_frames() const;

 private:
  friend class RxFrame;
  struct Impl;
  explicit Node(std::unique_ptr<Impl> impl);
  void release(RxFrame& f);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::transport
