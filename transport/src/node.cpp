#include "sluice/transport/node.hpp"

#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "shared_segment.hpp"
#include "sluice/transport/log.hpp"
#include "sluice/transport/placement.hpp"
#include "ucx.hpp"

namespace sluice::transport {

namespace {

constexpr unsigned kAmData = 1;
constexpr unsigned kAmControl = 2;
constexpr unsigned kAmShared = 3;  // a split frame whose payload waits in the sender's segment

// Control frames from ranks this far past the job size are a late member greeting us before the
// launcher's word of it arrived: dropped without complaint.
constexpr uint32_t kMaxUnannouncedRanks = 64;
using Clock = std::chrono::steady_clock;

uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

struct ChannelKey {
  uint32_t edge;
  uint32_t peer;
  auto operator<=>(const ChannelKey&) const = default;
};

}  // namespace

struct Node::Impl {
  // ---- set once, before the progress thread starts ----
  TransportOptions opts;
  uint32_t self = 0;
  uint32_t job_size = 1;
  std::string job_id;
  std::string name;
  std::string host;  // gethostname()
  FrameCheck check;
  detail::UcpContext context;  // member order: context outlives worker outlives endpoints
  detail::UcpWorker worker;
  size_t max_am_header = 0;  // what UCX carries in an AM header (0: no split frames)
  int worker_fd = -1;
  int wake_fd = -1;
  int epoll_fd = -1;
  std::vector<ucp_ep_h> eps;  // by rank; progress thread only after connect
  std::vector<std::string> peer_names;
  struct Watch {
    int fd;
    std::function<bool()> fn;
    bool active = true;
  };
  std::vector<Watch> watches;
  struct JoinRule {
    std::vector<uint32_t> in_edges, out_edges;
  };
  std::map<std::string, JoinRule> join_rules;  // by location
  // Our broadcast segment (share_broadcast_memory), offered to every peer; immutable once set.
  std::shared_ptr<detail::SegmentWriter> shared_out;

  // ---- shared between the runtime thread and the progress thread, guarded by mu ----
  mutable std::mutex mu;
  std::condition_variable cv;  // window space, activity
  struct OutChannel {
    uint64_t next_seq = 1;
    uint64_t in_flight = 0;
    bool closed = false;
    bool acked = false;
    Clock::time_point blocked_since{};  // when a send first found the window full
  };
  struct InChannel {
    uint64_t expected = 1;  // next sequence number
    uint64_t close_at = 0;  // last_seq from Close; 0 while open
    bool close_acked = false;
    bool broken = false;    // a sequence gap: delivered a prefix, then stopped
    bool late = false;      // made by a join: its sender may leave before it heard of us
    uint64_t consumed = 0;  // bytes released since the last credit
    std::deque<RxFrame> ready;
  };
  std::map<ChannelKey, OutChannel> outs;  // (edge, dst)
  std::map<ChannelKey, InChannel> ins;    // (edge, src)
  struct Peer {
    bool lost = false;
    bool bye = false;
    bool greeted = false;    // its Hello arrived
    bool departed = false;   // the launcher reports it exited 0
    int shared_bit = -1;     // its reader bit in our segment's masks, once offered
    bool shared_ok = false;  // it mapped our segment: frames may name its blocks
    PeerStats stats;
  };
  std::vector<Peer> peers;
  std::vector<PeerInfo> joined;        // members add_peer() added, not yet taken by the runtime
  uint64_t rejected_unattributed = 0;  // frames whose header did not name a valid peer
  uint32_t next_shared_bit = 0;        // reader bits are never reused (a late clear is harmless)
  bool offer_on_hello = false;         // a late member offers once a peer greeted it (knows it)
  std::atomic<uint64_t> activity{0};

  // ---- commands from the runtime thread to the progress thread ----
  struct Command {
    enum Kind { kSend, kRelease } kind = kSend;
    uint32_t dst = 0;
    OwnedFrame frame;
    void* ucx_data = nullptr;
  };
  std::mutex cmd_mu;
  std::vector<Command> commands;  // guarded by cmd_mu
  std::atomic<bool> cmd_pending{false};
  std::atomic<bool> sleeping{false};

  // ---- progress thread only (spin mode: the holder of progress_mu) ----
  std::thread progress;
  std::mutex progress_mu;  // spin mode: serializes the runtime threads that drive progress
  uint64_t last_timer_ns = 0;
  uint64_t last_busy_ns = 0;
  std::atomic<uint64_t> last_step_ns{0};  // spin mode: when progress last ran (keepalive)
  std::atomic<bool> stop{false};
  bool connected = false;
  bool shut = false;
  std::vector<uint64_t> outstanding;  // by rank: sends UCX has not completed
  struct Arrival {                    // a data frame from one peer, in arrival order
    Impl* impl = nullptr;
    uint32_t src = 0;
    bool ready = false;
    bool failed = false;
    void* ucx_data = nullptr;
    PooledBuffer heap;  // the frame, or a split frame's prefix
    const uint8_t* data = nullptr;
    size_t length = 0;     // the whole frame's
    size_t prefix = 0;     // a split frame's
    PooledBuffer payload;  // a split frame's elements (their own buffer: see RxFrame)
    size_t payload_size = 0;
  };
  std::vector<std::deque<std::unique_ptr<Arrival>>> arrivals;  // by src rank
  std::vector<uint64_t> last_rx_ns, last_tx_ns;
  std::vector<bool> lanes_known;
  struct SharedIn {  // a peer's segment we mapped, and our reader bit in it
    std::unique_ptr<detail::SegmentReader> segment;
    uint32_t bit = 0;
  };
  std::vector<SharedIn> shared_in;  // by rank
  // The descriptor of the AM callback now running: if pump() drops it, the callback returns
  // UCS_OK (UCX frees it) instead of releasing it from inside its own callback.
  void* in_callback_data = nullptr;
  bool in_callback_dropped = false;

  // ------------------------------------------------------------------------------------------
  // Announces activity to waiting runtime threads. Call with mu held: a waiter checks the
  // counter under mu, so a bump outside it could fall between that check and its sleep.
  void bump() {
    activity.fetch_add(1, std::memory_order_release);
    cv.notify_all();
  }

  // The same without mu held (the hot path: frames delivered). Spin mode has no sleepers: the
  // counter is all. Adaptive mode counts under mu, so a waiter between its check and its sleep
  // cannot miss it, and notifies after unlocking, so the woken thread does not block on mu.
  void announce() {
    if (opts.progress == ProgressMode::kSpin) {
      activity.fetch_add(1, std::memory_order_release);
      return;
    }
    {
      std::lock_guard lock(mu);
      activity.fetch_add(1, std::memory_order_release);
    }
    cv.notify_all();
  }

  void post(Command c) {
    {
      std::lock_guard lock(cmd_mu);
      commands.push_back(std::move(c));
    }
    cmd_pending.store(true, std::memory_order_seq_cst);
    if (sleeping.load(std::memory_order_seq_cst)) {
      uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
    }
  }

  void post_control(const ControlMsg& m) {
    Command c;
    c.kind = Command::kSend;
    c.dst = m.dst;
    c.frame = encode_control(m);
    post(std::move(c));
  }

  ControlMsg control_to(uint32_t dst, ControlKind kind) const {
    ControlMsg m;
    m.kind = kind;
    m.src = self;
    m.dst = dst;
    return m;
  }

  // Makes room for ranks below n (a late member's table, a member that joined). On the owner's
  // thread before connect(), on the progress thread after.
  void grow_to(uint32_t n) {
    if (n <= job_size) return;
    {
      std::lock_guard lock(mu);  // peer_names too: lose_peer_locked reads it from any thread
      peers.resize(n);
      job_size = n;
      check.job_size = n;
      for (uint32_t r = static_cast<uint32_t>(peer_names.size()); r < n; ++r) {
        peer_names.push_back("rank " + std::to_string(r));
      }
    }
    eps.resize(n, nullptr);
    arrivals.resize(n);
    last_rx_ns.resize(n, now_ns());
    last_tx_ns.resize(n, 0);
    lanes_known.resize(n, false);
    shared_in.resize(n);
    outstanding.resize(n, 0);
  }

  Status create_endpoint(uint32_t r, const std::vector<uint8_t>& address) {
    if (address.empty()) return make_error("no UCX address for " + peer_names[r]);
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.address = reinterpret_cast<const ucp_address_t*>(address.data());
    // Peer-failure mode would disable UCX's shared-memory transports; failures are detected by
    // our own heartbeats instead (see DESIGN.md, Failure).
    ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
    ucs_status_t s = ucp_ep_create(worker.get(), &ep, &eps[r]);
    if (s != UCS_OK) {
      eps[r] = nullptr;
      return make_error(detail::ucs_error(
          ("connecting to " + peer_names[r] + " (transport " + to_string(opts.kind) + ")").c_str(),
          s));
    }
    return {};
  }

  void send_hello(uint32_t r) {
    ControlMsg m = control_to(r, ControlKind::kHello);
    m.job = job_id;
    m.pid = static_cast<uint32_t>(getpid());
    m.hostname = host;
    post_control(m);
  }

  // Offers our broadcast segment to peer r if it is on our host (`peer_host`; empty: unknown,
  // e.g. members of one process), once. Called with mu held; a peer past the 63 reader bits
  // just gets its broadcasts by UCX.
  void offer_shared_locked(uint32_t r, const std::string& peer_host) {
    if (!shared_out || peers[r].shared_bit >= 0 || (!peer_host.empty() && peer_host != host) ||
        next_shared_bit >= detail::kMaxSegmentReaders) {
      return;
    }
    ControlMsg m = control_to(r, ControlKind::kSharedOffer);
    peers[r].shared_bit = static_cast<int>(next_shared_bit);
    m.reader = next_shared_bit++;
    m.pid = static_cast<uint32_t>(getpid());
    m.fd = shared_out->fd();
    m.value = shared_out->mapped_bytes();
    m.nonce = shared_out->nonce();
    post_control(m);
  }

  // A peer that will copy nothing more from our segment: what it was sent is released.
  // Called with mu held.
  void drop_shared_reader_locked(uint32_t rank) {
    Peer& p = peers[rank];
    p.shared_ok = false;
    if (p.shared_bit >= 0) shared_out->drop_reader(static_cast<uint32_t>(p.shared_bit));
  }

  // A peer offered its segment: map it and accept, or stay silent (it keeps sending by UCX).
  // Progress thread.
  void map_shared(const ControlMsg& m) {
    if (opts.kind == TransportKind::kTcp) return;  // the user asked for tcp, and only tcp
    if (shared_in[m.src].segment) {
      reject(m.src, "offered a second shared segment");
      return;
    }
    if (m.reader >= detail::kMaxSegmentReaders) {
      reject(m.src, "shared segment offer names reader bit " + std::to_string(m.reader));
      return;
    }
    auto seg = detail::SegmentReader::open(m.pid, m.fd, m.value, m.nonce, m.src);
    if (!seg) {
      SLUICE_LOG_INFO("peer %s: not using its shared segment (%s); its broadcasts come by UCX",
                      peer_names[m.src].c_str(), seg.error().c_str());
      return;
    }
    shared_in[m.src] = SharedIn{std::move(*seg), m.reader};
    ControlMsg a = control_to(m.src, ControlKind::kSharedAccept);
    a.nonce = m.nonce;
    do_send(m.src, encode_control(a));
  }

  // Called with mu held.
  void lose_peer_locked(uint32_t rank, const std::string& reason) {
    Peer& p = peers[rank];
    if (p.lost || rank == self) return;
    p.lost = true;
    p.stats.lost_reason = reason;
    drop_shared_reader_locked(rank);
    bool had_open_input = false;
    for (auto& [k, in] : ins) {
      if (k.peer == rank && !(in.close_at != 0 && in.expected > in.close_at)) had_open_input = true;
    }
    if (!p.bye || had_open_input) {
      SLUICE_LOG_ERROR("lost peer %s: %s%s", peer_names[rank].c_str(), reason.c_str(),
                       had_open_input ? "; its open channels end here with what arrived" : "");
    }
  }

  // ---- progress thread ---------------------------------------------------------------------

  static void send_done(void* request, ucs_status_t status, void* user_data);

  struct SendOp {
    Impl* impl;
    uint32_t dst;
    FrameHeader header;
    OwnedFrame frame;
    std::vector<ucp_dt_iov_t> iov;  // gather frames: the pieces, in order
    std::vector<uint8_t> split;     // split frames: FrameHeader, prefix (and SharedFrameRef)
  };

  // Whether frames to `dst` may go split. Not over tcp: UCX 1.13's tcp rendezvous (put) asserts
  // and aborts the process when the peer dies mid-transfer (tcp_ep.c, PUT_TX_WAITING_ACK), and
  // the gather path it replaces costs nothing extra there. With `auto`, only once the endpoint's
  // lanes are known and have no tcp in them. Progress thread only.
  bool split_lanes(uint32_t dst) const {
    switch (opts.kind) {
      case TransportKind::kShm:
        return true;
      case TransportKind::kTcp:
        return false;
      default:
        return lanes_known[dst] && peers[dst].stats.lanes.find("tcp") == std::string::npos;
    }
  }

  // A gather frame whose one hole runs to the end of the frame (but for padding) goes split: its
  // bytes before the hole ride in the AM header, the hole is the contiguous payload (see
  // FrameHeader). Fills op->split; false when the frame does not have that shape.
  bool split_frame(SendOp& op) const {
    const auto& holes = op.frame.holes();
    if (!op.frame.split() || holes.size() != 1 || op.frame.kind() != FrameKind::kData ||
        !split_lanes(op.dst)) {
      return false;
    }
    const auto bytes = op.frame.bytes();
    const FrameHole& h = holes[0];
    const size_t prefix = static_cast<size_t>(h.at - bytes.data());
    const size_t tail = bytes.size() - prefix - h.size;
    if (h.size == 0 || prefix > kMaxFramePrefix || tail > kMaxSplitTail ||
        sizeof(FrameHeader) + prefix > max_am_header) {
      return false;
    }
    for (size_t i = 0; i < tail; ++i) {
      if (h.at[h.size + i] != 0) return false;  // the receiver fills the tail with zeros
    }
    FrameHeader fh = op.header;
    fh.prefix = static_cast<uint32_t>(prefix);
    op.split.resize(sizeof fh + prefix);
    std::memcpy(op.split.data(), &fh, sizeof fh);
    std::memcpy(op.split.data() + sizeof fh, bytes.data(), prefix);
    return true;
  }

  // A split frame whose payload is a block of our segment, to a peer that mapped it, goes by
  // name: a header-only AM that ends with the block's SharedFrameRef. The peer's reader bit is set
  // before the AM leaves (the block stays ours until the peer copied it or is gone). Called
  // with mu held, so a peer lost meanwhile cannot miss the bit it must clear.
  bool shared_frame_locked(SendOp& op) {
    const Peer& p = peers[op.dst];
    if (!p.shared_ok || op.split.empty()) return false;
    const FrameHole& h = op.frame.holes()[0];
    uint32_t slot = 0;
    uint64_t generation = 0;
    if (!shared_out->contains(h.src, h.size, &slot, &generation) ||
        op.split.size() + sizeof(SharedFrameRef) > max_am_header) {
      return false;
    }
    SharedFrameRef ref;
    ref.slot = slot;
    ref.generation = generation;
    ref.size = h.size;
    const auto* r = reinterpret_cast<const uint8_t*>(&ref);
    op.split.insert(op.split.end(), r, r + sizeof ref);
    shared_out->add_reader(slot, static_cast<uint32_t>(p.shared_bit));
    ++peers[op.dst].stats.frames_shared;
    return true;
  }

  // `to_departing`: the peer said Bye but is known to still listen (see finish).
  void do_send(uint32_t dst, OwnedFrame frame, bool to_departing = false) {
    if (eps[dst] == nullptr) return;
    auto* op = new SendOp{this, dst, frame.header(self), std::move(frame), {}, {}};
    const bool split = split_frame(*op);
    bool shared = false;
    {
      std::lock_guard lock(mu);
      // Never send into the void: not to a lost peer, nor to one that left.
      if (peers[dst].lost || (peers[dst].bye && !to_departing)) {
        delete op;
        return;
      }
      auto& st = peers[dst].stats;
      if (op->frame.kind() == FrameKind::kData) {
        ++st.frames_sent;
        st.bytes_sent += op->frame.bytes().size();
        if (split) shared = shared_frame_locked(*op);
        if (split && !shared) ++st.frames_split;
      }
    }
    ucp_request_param_t param{};
    param.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_MEMORY_TYPE;
    param.cb.send = &Impl::send_done;
    param.user_data = op;
    param.memory_type = UCS_MEMORY_TYPE_HOST;
    auto bytes = op->frame.bytes();
    unsigned id = op->frame.kind() == FrameKind::kData ? kAmData : kAmControl;
    const void* buffer = bytes.data();
    size_t count = bytes.size();
    const void* header = &op->header;
    size_t header_size = sizeof op->header;
    if (shared) {
      id = kAmShared;
      header = op->split.data();
      header_size = op->split.size();
      buffer = nullptr;
      count = 0;
    } else if (split) {
      header = op->split.data();
      header_size = op->split.size();
      buffer = op->frame.holes()[0].src;
      count = op->frame.holes()[0].size;
    } else if (!op->frame.holes().empty()) {
      // Frame pieces between the holes, and the holes' sources: UCX sends them as one message.
      const uint8_t* at = bytes.data();
      for (const auto& h : op->frame.holes()) {
        if (h.at > at)
          op->iov.push_back({const_cast<uint8_t*>(at), static_cast<size_t>(h.at - at)});
        op->iov.push_back({const_cast<uint8_t*>(h.src), h.size});
        at = h.at + h.size;
      }
      const uint8_t* end = bytes.data() + bytes.size();
      if (end > at) op->iov.push_back({const_cast<uint8_t*>(at), static_cast<size_t>(end - at)});
      param.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
      param.datatype = ucp_dt_make_iov();
      buffer = op->iov.data();
      count = op->iov.size();
    }
    ucs_status_ptr_t r = ucp_am_send_nbx(eps[dst], id, header, header_size, buffer, count, &param);
    last_tx_ns[dst] = now_ns();
    if (r == nullptr) {
      delete op;
    } else if (UCS_PTR_IS_ERR(r)) {
      std::lock_guard lock(mu);
      lose_peer_locked(dst, detail::ucs_error("sending", UCS_PTR_STATUS(r)));
      delete op;
      bump();
    } else {
      ++outstanding[dst];
    }
  }

  void drain_commands() {
    std::vector<Command> batch;
    {
      std::lock_guard lock(cmd_mu);
      batch.swap(commands);
      cmd_pending.store(false, std::memory_order_relaxed);
    }
    for (auto& c : batch) {
      if (c.kind == Command::kSend) {
        do_send(c.dst, std::move(c.frame));
      } else {
        ucp_am_data_release(worker.get(), c.ucx_data);
      }
    }
  }

  static ucs_status_t on_am_data(void* arg, const void* header, size_t header_length, void* data,
                                 size_t length, const ucp_am_recv_param_t* param) {
    return static_cast<Impl*>(arg)->receive_data(header, header_length, data, length, param);
  }
  static ucs_status_t on_am_control(void* arg, const void* header, size_t header_length, void* data,
                                    size_t length, const ucp_am_recv_param_t* param) {
    return static_cast<Impl*>(arg)->receive_control(header, header_length, data, length, param);
  }
  static ucs_status_t on_am_shared(void* arg, const void* header, size_t header_length, void* data,
                                   size_t length, const ucp_am_recv_param_t* param) {
    return static_cast<Impl*>(arg)->receive_shared(header, header_length, data, length, param);
  }
  static void on_rndv_done(void* request, ucs_status_t status, size_t length, void* user_data);

  void reject(uint32_t src, const std::string& why) {
    std::lock_guard lock(mu);
    if (src < job_size) {
      ++peers[src].stats.frames_rejected;
    } else {
      ++rejected_unattributed;
    }
    SLUICE_LOG_ERROR("rejected frame%s%s: %s", src < job_size ? " from " : "",
                     src < job_size ? peer_names[src].c_str() : "", why.c_str());
  }

  // A frame of `src` is refused after it was counted on: every channel from `src` has a gap.
  void lose_frame(uint32_t src, const std::string& why) {
    reject(src, why);
    break_channels_from(src);
  }

  Result<FrameHeader> check_header(const void* header, size_t header_length, size_t length,
                                   FrameKind kind) {
    auto h = decode_frame_header({static_cast<const uint8_t*>(header), header_length});
    if (!h) return h;
    if (h->kind != kind) return make_error("frame kind does not match its message id");
    if (h->src >= job_size || h->src == self) {
      return make_error("frame header names source rank " + std::to_string(h->src) +
                        ", not a peer in a job of " + std::to_string(job_size));
    }
    // A split frame's payload is the frame less its prefix and at most kMaxSplitTail bytes of
    // padding; any other frame is the whole payload.
    // (decode_frame_header checked prefix <= length, so `room` cannot wrap; a payload length a
    // peer claims is compared against it, never added to anything.)
    const uint64_t room = h->length - h->prefix;
    if (h->prefix == 0 ? h->length != length
                       : (length == 0 || length > room || room - length > kMaxSplitTail)) {
      return make_error("frame header announces " + std::to_string(h->length) +
                        " bytes but the transport delivered " + std::to_string(length) +
                        (h->prefix != 0 ? " after a " + std::to_string(h->prefix) + "-byte prefix"
                                        : std::string()) +
                        " (truncated or padded)");
    }
    if (h->length > opts.max_frame_bytes) {
      return make_error("frame of " + std::to_string(h->length) + " bytes exceeds the " +
                        std::to_string(opts.max_frame_bytes) + "-byte limit");
    }
    return h;
  }

  // A split frame is kept in two buffers: its prefix (from the AM header) and its elements, which
  // get a buffer of their own so that the runtime can make them a batch without copying
  // (RxFrame::take_elements). May throw std::bad_alloc.
  static void split_arrival(Arrival& a, const void* header, size_t payload_size) {
    FrameHeader h;
    std::memcpy(&h, header, sizeof h);
    a.prefix = h.prefix;
    a.heap = pool_allocate(h.prefix);
    std::memcpy(a.heap.get(), static_cast<const uint8_t*>(header) + sizeof h, h.prefix);
    a.payload = pool_allocate(payload_size);
    a.payload_size = payload_size;
  }

  // Puts a split frame back together in one buffer: prefix, payload, and the padding left out
  // as zeros. False when there is no memory for it.
  static bool join_split(Arrival& a) {
    PooledBuffer whole;
    try {
      whole = pool_allocate(a.length);
    } catch (const std::bad_alloc&) {
      return false;
    }
    std::memcpy(whole.get(), a.heap.get(), a.prefix);
    std::memcpy(whole.get() + a.prefix, a.payload.get(), a.payload_size);
    std::memset(whole.get() + a.prefix + a.payload_size, 0, a.length - a.prefix - a.payload_size);
    a.heap = std::move(whole);
    a.data = a.heap.get();
    a.payload.reset();
    a.payload_size = 0;
    return true;
  }

  ucs_status_t receive_data(const void* header, size_t header_length, void* data, size_t length,
                            const ucp_am_recv_param_t* param) {
    auto h = check_header(header, header_length, length, FrameKind::kData);
    if (!h) {
      reject(UINT32_MAX, h.error());
      return UCS_OK;  // UCX frees the data
    }
    uint32_t src = h->src;
    last_rx_ns[src] = now_ns();
    auto a = std::make_unique<Arrival>();
    a->impl = this;
    a->src = src;
    a->length = h->length;
    const size_t prefix = h->prefix;
    ucs_status_t ret = UCS_OK;
    // No exception may cross UCX's C frames: a failed allocation rejects the frame instead.
    try {
      if (prefix != 0) {
        split_arrival(*a, header, length);
      } else if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) ||
                 !(param->recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA) ||
                 reinterpret_cast<uintptr_t>(data) % 8 != 0) {
        a->heap = pool_allocate(h->length);
      }
    } catch (const std::bad_alloc&) {
      lose_frame(src, "no memory for a frame of " + std::to_string(h->length) + " bytes");
      return UCS_OK;
    }
    // Where the payload goes: a split frame's own element buffer, or the frame buffer.
    uint8_t* const into = prefix != 0 ? a->payload.get() : a->heap.get();
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      a->data = a->heap.get();
      ucp_request_param_t p{};
      p.op_attr_mask =
          UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_MEMORY_TYPE;
      p.cb.recv_am = &Impl::on_rndv_done;
      p.user_data = a.get();
      p.memory_type = UCS_MEMORY_TYPE_HOST;
      ucs_status_ptr_t r = ucp_am_recv_data_nbx(worker.get(), data, into, length, &p);
      if (r == nullptr) {
        a->ready = true;
      } else if (UCS_PTR_IS_ERR(r)) {
        a->ready = true;
        a->failed = true;
        reject(src, detail::ucs_error("receiving a rendezvous frame", UCS_PTR_STATUS(r)));
      }
    } else if (prefix == 0 && (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA) &&
               reinterpret_cast<uintptr_t>(data) % 8 == 0) {
      a->ucx_data = data;  // keep UCX's descriptor: zero-copy receive
      a->data = static_cast<const uint8_t*>(data);
      a->ready = true;
      ret = UCS_INPROGRESS;
    } else {
      // Transient or misaligned data, or a split frame's payload: copy into an aligned buffer.
      std::memcpy(into, data, length);
      a->data = a->heap.get();
      a->ready = true;
    }
    in_callback_data = ret == UCS_INPROGRESS ? data : nullptr;
    in_callback_dropped = false;
    arrivals[src].push_back(std::move(a));
    pump(src);
    in_callback_data = nullptr;
    return in_callback_dropped ? UCS_OK : ret;
  }

  // A split frame whose payload waits in a block of the sender's segment: copy it out (the
  // frame is then ours alone: it is verified like any other), release the block, deliver.
  ucs_status_t receive_shared(const void* header, size_t header_length, void*, size_t length,
                              const ucp_am_recv_param_t* param) {
    if (header_length < sizeof(FrameHeader) + sizeof(SharedFrameRef)) {
      reject(UINT32_MAX, "shared-segment frame header of " + std::to_string(header_length) +
                             " bytes is too short");
      return UCS_OK;
    }
    SharedFrameRef ref;
    const size_t head = header_length - sizeof ref;
    std::memcpy(&ref, static_cast<const uint8_t*>(header) + head, sizeof ref);
    // However the frame ends (copied, or refused), the block goes back to its sender, which
    // would otherwise hold it for us forever; a copied one before the frame is delivered.
    FrameHeader named;
    std::memcpy(&named, header, sizeof named);
    struct Release {
      const SharedIn* in;
      uint32_t slot;
      void now() {
        if (in != nullptr && in->segment) in->segment->done(slot, in->bit);
        in = nullptr;
      }
      ~Release() { now(); }
    } release{named.src < shared_in.size() ? &shared_in[named.src] : nullptr, ref.slot};
    auto h = check_header(header, head, ref.size, FrameKind::kData);
    if (!h) {
      reject(UINT32_MAX, h.error());
      return UCS_OK;
    }
    const uint32_t src = h->src;
    const SharedIn& in = shared_in[src];
    if (!in.segment) {
      lose_frame(src, "shared-segment frame from a peer whose segment is not mapped");
      return UCS_OK;
    }
    if (length != 0 || (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
      lose_frame(src, "shared-segment frame carries a payload of its own");
      return UCS_OK;
    }
    last_rx_ns[src] = now_ns();
    auto a = std::make_unique<Arrival>();
    a->impl = this;
    a->src = src;
    a->length = h->length;
    try {
      split_arrival(*a, header, ref.size);
    } catch (const std::bad_alloc&) {
      lose_frame(src, "no memory for a frame of " + std::to_string(h->length) + " bytes");
      return UCS_OK;
    }
    Status copied = in.segment->copy_block(ref.slot, ref.generation, ref.size, a->payload.get());
    release.now();
    if (!copied) {
      lose_frame(src, "shared-segment frame " + copied.error());
      return UCS_OK;
    }
    a->data = a->heap.get();
    a->ready = true;
    arrivals[src].push_back(std::move(a));
    pump(src);
    return UCS_OK;
  }

  // Delivers a peer's completed arrivals in order: verify, check ids and sequence, route.
  void pump(uint32_t src) {
    auto& q = arrivals[src];
    bool delivered = false;
    while (!q.empty() && q.front()->ready) {
      std::unique_ptr<Arrival> a = std::move(q.front());
      q.pop_front();
      if (a->failed) {
        break_channels_from(src);  // a frame of this peer is gone: its channels have a gap
        continue;
      }
      auto v = a->payload ? decode_split_data_frame({a->heap.get(), a->prefix},
                                                    {a->payload.get(), a->payload_size}, check)
                          : decode_data_frame({a->data, a->length}, check);
      if (!v && a->payload) {
        // Not a prefix that ends where the elements start (or not a frame): decode it whole.
        if (!join_split(*a)) {
          lose_frame(src, "no memory for a frame of " + std::to_string(a->length) + " bytes");
          continue;
        }
        v = decode_data_frame({a->data, a->length}, check);
      }
      auto drop = [&](const std::string& why) {
        if (a->ucx_data != nullptr && a->ucx_data == in_callback_data) {
          in_callback_dropped = true;
        } else if (a->ucx_data != nullptr) {
          ucp_am_data_release(worker.get(), a->ucx_data);
        }
        reject(src, why);
      };
      if (!v) {
        drop(v.error());
        break_channels_from(src);
        continue;
      }
      if (v->src != src) {
        drop("frame says it is from rank " + std::to_string(v->src) + " but its header says " +
             std::to_string(src));
        break_channels_from(src);
        continue;
      }
      std::unique_lock lock(mu);
      auto it = ins.find({v->edge, src});
      if (it == ins.end()) {
        lock.unlock();
        drop("no channel for edge " + std::to_string(v->edge) + " from this peer");
        continue;
      }
      InChannel& in = it->second;
      if (in.broken || peers[src].lost) {
        lock.unlock();
        drop("channel edge " + std::to_string(v->edge) + " already stopped");
        continue;
      }
      if (v->seq != in.expected) {
        in.broken = true;
        lock.unlock();
        drop("channel edge " + std::to_string(v->edge) + ": expected frame " +
             std::to_string(in.expected) + ", got " + std::to_string(v->seq) +
             "; the channel stops here (the receiver keeps the prefix)");
        bump();
        continue;
      }
      ++in.expected;
      auto& st = peers[src].stats;
      ++st.frames_received;
      st.bytes_received += a->length;
      RxFrame f;
      f.node_ = owner;
      f.ucx_data_ = a->ucx_data;
      f.heap_ = std::move(a->heap);
      f.elements_ = std::move(a->payload);
      f.wire_bytes_ = a->length;
      f.view_ = *v;
      in.ready.push_back(std::move(f));
      delivered = true;
    }
    if (delivered) announce();
  }

  // A frame from `src` was lost before we could tell its channel: every channel from `src` has
  // a gap now, so each stops with the prefix it delivered (and none waits for a Close forever).
  void break_channels_from(uint32_t src) {
    std::lock_guard lock(mu);
    for (auto& [k, in] : ins) {
      if (k.peer == src && !channel_closed(in)) in.broken = true;
    }
    bump();
  }

  ucs_status_t receive_control(const void* header, size_t header_length, void* data, size_t length,
                               const ucp_am_recv_param_t* param) {
    auto h = check_header(header, header_length, length, FrameKind::kControl);
    if (!h) {
      // A late member may greet us (or beat) before the launcher's word of it arrives.
      auto raw = decode_frame_header({static_cast<const uint8_t*>(header), header_length});
      if (raw && raw->kind == FrameKind::kControl && raw->src >= job_size &&
          raw->src < job_size + kMaxUnannouncedRanks) {
        return UCS_OK;
      }
      reject(UINT32_MAX, h.error());
      return UCS_OK;
    }
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      reject(h->src, "control frame arrived by rendezvous (control frames are small)");
      return UCS_OK;
    }
    // Control frames are tiny: copy to an aligned buffer and let UCX free its descriptor.
    alignas(8) uint8_t buf[1024];
    if (length > sizeof buf) {
      reject(h->src, "control frame of " + std::to_string(length) + " bytes, limit 1024");
      return UCS_OK;
    }
    std::memcpy(buf, data, length);
    auto m = decode_control({buf, length}, check);
    if (!m) {
      reject(h->src, m.error());
      return UCS_OK;
    }
    if (m->src != h->src) {
      reject(h->src, "control frame source does not match its header");
      return UCS_OK;
    }
    last_rx_ns[m->src] = now_ns();
    if (m->kind == ControlKind::kSharedOffer) {
      map_shared(*m);  // opens and maps a file: not under mu
      return UCS_OK;
    }
    handle_control(*m);
    return UCS_OK;
  }

  void handle_control(const ControlMsg& m) {
    std::unique_lock lock(mu);
    Peer& p = peers[m.src];
    switch (m.kind) {
      case ControlKind::kHello:
        p.greeted = true;
        // A late member's peers drop what it sends before they heard of it; their Hello says
        // they have.
        if (offer_on_hello) offer_shared_locked(m.src, m.hostname);
        if (m.job != job_id) {
          SLUICE_LOG_ERROR(
              "peer rank %u says it belongs to job '%s', this is job '%s'; ignoring it", m.src,
              m.job.c_str(), job_id.c_str());
          lose_peer_locked(m.src, "belongs to another job");
        }
        break;
      case ControlKind::kHeartbeat:
        break;
      case ControlKind::kCredit: {
        auto it = outs.find({m.edge, m.src});
        if (it != outs.end()) {
          it->second.in_flight -= std::min(it->second.in_flight, m.value);
        }
        break;
      }
      case ControlKind::kClose: {
        auto it = ins.find({m.edge, m.src});
        if (it == ins.end()) break;
        if (m.value < it->second.expected - 1) {
          // The sender says it sent less than we already delivered: the channel cannot be
          // trusted any further.
          SLUICE_LOG_ERROR("%s closed edge %u after frame %llu, but frame %llu already arrived",
                           peer_names[m.src].c_str(), m.edge,
                           static_cast<unsigned long long>(m.value),
                           static_cast<unsigned long long>(it->second.expected - 1));
          it->second.broken = true;
          break;
        }
        if (m.value == 0) {
          end_empty(it->second);
        } else {
          it->second.close_at = m.value;
        }
        break;
      }
      case ControlKind::kCloseAck: {
        auto it = outs.find({m.edge, m.src});
        if (it != outs.end()) it->second.acked = true;
        break;
      }
      case ControlKind::kBye:
        left_locked(m.src);
        break;
      case ControlKind::kSharedAccept:
        if (shared_out && m.nonce == shared_out->nonce() && p.shared_bit >= 0 && !p.lost &&
            !p.bye) {
          p.shared_ok = true;
        }
        break;
      case ControlKind::kSharedOffer:  // handled in receive_control, off mu
        break;
    }
    activity.fetch_add(1, std::memory_order_release);
    lock.unlock();
    cv.notify_all();
  }

  // A peer left cleanly (its Bye, or the launcher's report that it exited 0). Channels it had not
  // closed are cut, unless a join made them and nothing came: it finished before it heard of
  // the member that joined, so its stream to us is empty. Called with mu held.
  void left_locked(uint32_t src) {
    peers[src].bye = true;
    drop_shared_reader_locked(src);
    for (auto& [k, in] : ins) {
      if (k.peer != src || channel_closed(in)) continue;
      if (unused_late(in)) {
        end_empty(in);
        continue;
      }
      lose_peer_locked(src, "it left without closing its channels");
    }
    for (auto& [k, out] : outs) {
      if (k.peer == src && !out.acked) {
        lose_peer_locked(src, "it left before acknowledging everything sent to it");
      }
    }
  }

  // Ends a channel that will never carry a frame (closed before any): it counts as closed.
  static void end_empty(InChannel& in) {
    in.close_at = UINT64_MAX;
    in.expected = UINT64_MAX;
  }
  // Made by a join and never used: its sender may have left before it heard of the join.
  static bool unused_late(const InChannel& in) {
    return in.late && !channel_closed(in) && in.expected == 1 && in.ready.empty();
  }

  static bool channel_closed(const InChannel& in) {
    return in.close_at != 0 && (in.close_at == UINT64_MAX || in.expected > in.close_at);
  }

  void timers() {
    uint64_t now = now_ns();
    uint64_t hb = static_cast<uint64_t>(opts.heartbeat_ms) * 1000000u;
    uint64_t timeout = static_cast<uint64_t>(opts.peer_timeout_ms) * 1000000u;
    for (uint32_t r = 0; r < job_size; ++r) {
      if (r == self || eps[r] == nullptr) continue;
      bool lost, bye;
      {
        std::lock_guard lock(mu);
        lost = peers[r].lost;
        bye = peers[r].bye;
      }
      if (lost || bye) continue;
      if (now - last_tx_ns[r] >= hb) {
        ControlMsg m = control_to(r, ControlKind::kHeartbeat);
        m.value = now;
        do_send(r, encode_control(m));
      }
      if (now - last_rx_ns[r] >= timeout) {
        std::lock_guard lock(mu);
        lose_peer_locked(r, "no message for " + std::to_string(opts.peer_timeout_ms) + " ms");
        bump();
      }
      record_lanes(r);
    }
    // Watched fds (the launcher's reports of exits and joins) are read here too: spin mode never
    // sleeps in epoll, and a busy adaptive progress thread may not for a long time.
    poll_fds(0);
  }

  // Notes which transports UCX chose for a peer once the endpoint has carried traffic (its
  // lanes are final after wireup).
  void record_lanes(uint32_t r) {
    if (lanes_known[r] || eps[r] == nullptr) return;
    {
      std::lock_guard lock(mu);
      if (peers[r].stats.frames_received + peers[r].stats.frames_sent == 0) return;
    }
    std::string lanes = detail::endpoint_lanes(eps[r]);
    std::lock_guard lock(mu);
    peers[r].stats.lanes = lanes;
    lanes_known[r] = true;
    SLUICE_LOG_INFO("peer %s: UCX lanes %s", peer_names[r].c_str(), lanes.c_str());
  }

  void poll_fds(int timeout_ms) {
    epoll_event evs[8];
    int n = epoll_wait(epoll_fd, evs, 8, timeout_ms);
    for (int i = 0; i < n; ++i) {
      int fd = evs[i].data.fd;
      if (fd == wake_fd) {
        uint64_t v;
        [[maybe_unused]] auto r = ::read(wake_fd, &v, sizeof v);
      } else {
        for (auto& w : watches) {
          if (w.fd == fd && w.active && !w.fn()) {
            w.active = false;
            epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
          }
        }
      }
    }
  }

  int next_timer_ms() const { return std::max(1, opts.heartbeat_ms / 2); }

  // One pass of the engine: queued commands, UCX progress, timers. Only the thread that owns
  // progress calls it (the progress thread, or in spin mode whoever holds progress_mu).
  bool step() {
    bool busy = false;
    if (cmd_pending.load(std::memory_order_acquire)) {
      drain_commands();
      busy = true;
    }
    while (ucp_worker_progress(worker.get()) != 0) busy = true;
    uint64_t now = now_ns();
    if (now - last_timer_ns >= static_cast<uint64_t>(next_timer_ms()) * 1000000u) {
      timers();
      last_timer_ns = now;
    }
    if (busy) last_busy_ns = now;
    last_step_ns.store(now, std::memory_order_relaxed);
    return busy;
  }

  // Spin mode: the runtime's own threads drive progress, one at a time, with no thread handoff
  // on the data path. Returns false if another thread is progressing right now.
  bool step_inline() {
    std::unique_lock lock(progress_mu, std::try_to_lock);
    if (!lock.owns_lock() || !connected || shut) return false;
    step();
    return true;
  }

  // Spin mode: the runtime thread drives progress, but not while a tick runs user code. This
  // thread steps in when nobody progressed for half a heartbeat period, so a long tick neither
  // gets the member declared lost nor stops credits and heartbeats. It sleeps otherwise.
  void run_keepalive() {
    const auto period = std::chrono::milliseconds(next_timer_ms());
    while (!stop.load(std::memory_order_acquire)) {
      {
        std::unique_lock lock(mu);
        cv.wait_for(lock, period, [&] { return stop.load(std::memory_order_acquire); });
      }
      uint64_t idle = now_ns() - last_step_ns.load(std::memory_order_relaxed);
      if (idle >= static_cast<uint64_t>(period.count()) * 1000000u) step_inline();
    }
  }

  // Placement: the progress (or keepalive) thread runs inside the member's share of cores,
  // next to the threads that consume what it receives. A failure costs locality, not data.
  void pin_this_thread() {
    if (!opts.cpu_share || !opts.cpu_share->binds()) return;
    if (auto s = bind_current_thread(*opts.cpu_share); !s) {
      SLUICE_LOG_WARN("progress thread: %s", s.error().c_str());
    }
  }

  // Adaptive mode: a dedicated thread spins while busy, then sleeps on the worker's event fd.
  void run_progress() {
    const uint64_t spin_ns = static_cast<uint64_t>(opts.spin_us) * 1000u;
    last_busy_ns = now_ns();
    while (!stop.load(std::memory_order_acquire)) {
      if (step()) continue;
      if (now_ns() - last_busy_ns < spin_ns) continue;
      // Idle: arm the worker and sleep on its event fd, our wake fd and watched fds.
      sleeping.store(true, std::memory_order_seq_cst);
      if (cmd_pending.load(std::memory_order_seq_cst)) {
        sleeping.store(false);
        continue;
      }
      ucs_status_t s = ucp_worker_arm(worker.get());
      if (s == UCS_ERR_BUSY) {
        sleeping.store(false);
        continue;
      }
      poll_fds(next_timer_ms());
      sleeping.store(false, std::memory_order_seq_cst);
      last_busy_ns = now_ns();
    }
    finish_on_progress_thread();
  }

  // Bye to every live peer, wait for outstanding sends, close endpoints (bounded waits).
  void finish_on_progress_thread() {
    drain_commands();
    for (uint32_t r = 0; r < job_size; ++r) {
      if (r == self || eps[r] == nullptr) continue;
      bool lost, bye, downstream = false;
      {
        std::lock_guard lock(mu);
        lost = peers[r].lost;
        bye = peers[r].bye;
        for (const auto& [k, out] : outs) downstream = downstream || k.peer == r;
      }
      // A receiver of ours that already said Bye still waits (bounded) for ours, below.
      if (!lost && (!bye || downstream)) {
        do_send(r, encode_control(control_to(r, ControlKind::kBye)), /*to_departing=*/true);
      }
    }
    // Wait (bounded) for what is still in flight to live peers; sends to lost peers never finish.
    auto pending_to_live = [&] {
      std::lock_guard lock(mu);
      for (uint32_t r = 0; r < job_size; ++r) {
        if (outstanding[r] > 0 && !peers[r].lost && !peers[r].bye) return true;
      }
      return false;
    };
    auto deadline = Clock::now() + std::chrono::seconds(2);
    while (pending_to_live() && Clock::now() < deadline) ucp_worker_progress(worker.get());
    if (pending_to_live()) {
      for (uint32_t r = 0; r < job_size; ++r) {
        if (outstanding[r] > 0) {
          SLUICE_LOG_WARN("%llu sends to %s did not complete within 2 s of shutdown",
                          static_cast<unsigned long long>(outstanding[r]), peer_names[r].c_str());
        }
      }
    }
    for (uint32_t r = 0; r < job_size; ++r) record_lanes(r);
    // A completed send only means its buffer is free again, not that the peer has it. Peers
    // that send to us wait for our CloseAck and say Bye once they got it: give them (bounded)
    // time for that, progressing, so our acknowledgements reach them before the worker goes.
    // No UCX flush or close here: flushing towards a peer that already left makes UCX report
    // endpoint errors on stdout, and a forced close needs its peer-error mode, which we do not
    // use; ucp_worker_destroy releases the endpoints.
    auto upstream_pending = [&] {
      std::lock_guard lock(mu);
      for (const auto& [k, in] : ins) {
        if (!peers[k.peer].bye && !peers[k.peer].lost) return true;
      }
      return false;
    };
    deadline = Clock::now() + std::chrono::seconds(2);
    while (upstream_pending() && Clock::now() < deadline) {
      if (ucp_worker_progress(worker.get()) == 0) sched_yield();
    }
    std::fill(eps.begin(), eps.end(), nullptr);
  }

  Node* owner = nullptr;
};

void Node::Impl::send_done(void* request, ucs_status_t status, void* user_data) {
  auto* op = static_cast<SendOp*>(user_data);
  Impl* self_impl = op->impl;
  --self_impl->outstanding[op->dst];
  if (status != UCS_OK && status != UCS_ERR_CANCELED) {
    std::lock_guard lock(self_impl->mu);
    self_impl->lose_peer_locked(op->dst, detail::ucs_error("sending", status));
    self_impl->bump();
  }
  delete op;
  ucp_request_free(request);
}

void Node::Impl::on_rndv_done(void* request, ucs_status_t status, size_t, void* user_data) {
  auto* a = static_cast<Arrival*>(user_data);
  a->ready = true;
  if (status != UCS_OK) {
    a->failed = true;
    a->impl->reject(a->src, detail::ucs_error("receiving a rendezvous frame", status));
  }
  ucp_request_free(request);
  a->impl->pump(a->src);
}

// ---------------------------------------------------------------------------------------------

RxFrame& RxFrame::operator=(RxFrame&& o) noexcept {
  if (this != &o) {
    reset();
    node_ = std::exchange(o.node_, nullptr);
    ucx_data_ = std::exchange(o.ucx_data_, nullptr);
    heap_ = std::move(o.heap_);
    elements_ = std::move(o.elements_);
    shared_ = std::move(o.shared_);
    wire_bytes_ = std::exchange(o.wire_bytes_, 0);
    view_ = std::exchange(o.view_, DataFrameView{});
  }
  return *this;
}

std::shared_ptr<const void> RxFrame::share() {
  PooledBuffer& mem = elements_ ? elements_ : heap_;
  if (!shared_ && mem) shared_ = std::shared_ptr<const uint8_t[]>(mem.release(), mem.get_deleter());
  return shared_;
}

PooledBuffer RxFrame::take_elements() {
  if (!elements_) return {};
  view_.elements = {};
  return std::move(elements_);
}

void RxFrame::reset() {
  if (node_ != nullptr) node_->release(*this);
  node_ = nullptr;
  ucx_data_ = nullptr;
  heap_.reset();
  elements_.reset();
  shared_.reset();
  view_ = DataFrameView{};
}

Node::Node(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) { impl_->owner = this; }

Result<std::unique_ptr<Node>> Node::create(const TransportOptions& opts, uint32_t self_rank,
                                           uint32_t job_size, std::string job_id,
                                           std::string name) {
  auto impl = std::make_unique<Impl>();
  impl->opts = opts;
  impl->self = self_rank;
  impl->job_size = job_size;
  impl->job_id = std::move(job_id);
  impl->name = std::move(name);
  impl->check = FrameCheck{opts.max_frame_bytes, self_rank, job_size};
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  impl->host = host;
  auto ctx = detail::UcpContext::create(opts.kind, impl->name);
  if (!ctx) return std::move(ctx).take_error();
  impl->context = std::move(*ctx);
  auto w = detail::UcpWorker::create(impl->context);
  if (!w) return std::move(w).take_error();
  impl->worker = std::move(*w);
  auto efd = impl->worker.event_fd();
  if (!efd) return std::move(efd).take_error();
  impl->worker_fd = *efd;
  impl->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  impl->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (impl->wake_fd < 0 || impl->epoll_fd < 0) {
    return make_error(std::string("creating the progress engine's fds: ") + std::strerror(errno));
  }
  for (int fd : {impl->worker_fd, impl->wake_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(impl->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
  }
  for (unsigned id : {kAmData, kAmControl, kAmShared}) {
    ucp_am_handler_param_t hp{};
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                    UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    hp.id = id;
    hp.cb = id == kAmData      ? &Impl::on_am_data
            : id == kAmControl ? &Impl::on_am_control
                               : &Impl::on_am_shared;
    hp.arg = impl.get();
    hp.flags = UCP_AM_FLAG_WHOLE_MSG;
    if (id == kAmData) hp.flags |= UCP_AM_FLAG_PERSISTENT_DATA;
    ucs_status_t s = ucp_worker_set_am_recv_handler(impl->worker.get(), &hp);
    if (s != UCS_OK) return make_error(detail::ucs_error("ucp_worker_set_am_recv_handler", s));
  }
  {
    ucp_worker_attr_t attr{};
    attr.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
    if (ucp_worker_query(impl->worker.get(), &attr) == UCS_OK) {
      impl->max_am_header = attr.max_am_header;
    }
  }
  impl->peers.resize(job_size);
  impl->eps.assign(job_size, nullptr);
  impl->peer_names.resize(job_size);
  impl->arrivals.resize(job_size);
  impl->last_rx_ns.assign(job_size, 0);
  impl->last_tx_ns.assign(job_size, 0);
  impl->lanes_known.assign(job_size, false);
  impl->shared_in.resize(job_size);
  impl->outstanding.assign(job_size, 0);
  for (uint32_t r = 0; r < job_size; ++r) impl->peer_names[r] = "rank " + std::to_string(r);
  return std::unique_ptr<Node>(new Node(std::move(impl)));
}

Node::~Node() {
  shutdown();
  // The progress thread has stopped: this thread may touch UCX now. Release what we hold, then
  // destroy the worker while Impl is whole (UCX completes purged sends through send_done).
  for (auto& [k, in] : impl_->ins) {
    for (auto& f : in.ready) {
      if (f.ucx_data_ != nullptr) ucp_am_data_release(impl_->worker.get(), f.ucx_data_);
      f.node_ = nullptr;
    }
    in.ready.clear();
  }
  for (auto& q : impl_->arrivals) {
    for (auto& a : q) {
      if (a->ucx_data != nullptr) ucp_am_data_release(impl_->worker.get(), a->ucx_data);
    }
    q.clear();
  }
  for (auto& c : impl_->commands) {
    if (c.kind == Impl::Command::kRelease) ucp_am_data_release(impl_->worker.get(), c.ucx_data);
  }
  impl_->commands.clear();
  impl_->worker = detail::UcpWorker();
  if (impl_->wake_fd >= 0) ::close(impl_->wake_fd);
  if (impl_->epoll_fd >= 0) ::close(impl_->epoll_fd);
}

uint32_t Node::rank() const { return impl_->self; }
const std::string& Node::name() const { return impl_->name; }

std::vector<uint8_t> Node::worker_address() const {
  auto a = impl_->worker.address();
  return a ? std::move(*a) : std::vector<uint8_t>{};
}

void Node::expect_input(uint32_t edge, uint32_t src) {
  std::lock_guard lock(impl_->mu);
  impl_->ins[{edge, src}];
}
void Node::declare_output(uint32_t edge, uint32_t dst) {
  std::lock_guard lock(impl_->mu);
  impl_->outs[{edge, dst}];
}

void Node::watch_fd(int fd, std::function<bool()> on_readable) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  epoll_ctl(impl_->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
  impl_->watches.push_back({fd, std::move(on_readable), true});
}

void Node::accept_joiners(const std::string& location, std::vector<uint32_t> in_edges,
                          std::vector<uint32_t> out_edges) {
  impl_->join_rules[location] = Impl::JoinRule{std::move(in_edges), std::move(out_edges)};
}

void Node::share_broadcast_memory(size_t block_bytes, uint32_t blocks) {
  if (impl_->opts.kind == TransportKind::kTcp) return;  // tcp only, as asked
  auto w = detail::SegmentWriter::create(block_bytes, blocks, impl_->self);
  if (!w) {
    SLUICE_LOG_WARN("no shared broadcast segment (%s): broadcasts go by UCX alone",
                    w.error().c_str());
    return;
  }
  impl_->shared_out = std::move(*w);
}

std::shared_ptr<uint8_t> Node::shared_buffer(size_t bytes) {
  auto& im = *impl_;
  if (!im.shared_out) return nullptr;
  {
    std::lock_guard lock(im.mu);
    bool any = false;
    for (const auto& p : im.peers) any = any || p.shared_ok;
    if (!any) return nullptr;
  }
  return im.shared_out->allocate(bytes);
}

Status Node::connect(const std::vector<PeerInfo>& peers, bool late) {
  auto& im = *impl_;
  if (late) {
    // Every channel of a late member was made by its join: a sender that finished before it
    // heard of us leaves with nothing sent, which ends the channel empty rather than cut. Marked
    // before progress starts, so no Bye is handled first.
    std::lock_guard lock(im.mu);
    for (auto& [k, in] : im.ins) in.late = true;
  }
  if (peers.size() < im.job_size || peers.size() <= im.self) {
    return make_error("peer table has " + std::to_string(peers.size()) + " entries, job has " +
                      std::to_string(std::max(im.job_size, im.self + 1)));
  }
  im.grow_to(static_cast<uint32_t>(peers.size()));
  uint64_t now = now_ns();
  for (uint32_t r = 0; r < im.job_size; ++r) {
    im.peer_names[r] = peers[r].location + "/" + std::to_string(peers[r].member);
    im.last_rx_ns[r] = now;
    im.last_tx_ns[r] = 0;
  }
  for (uint32_t r = 0; r < im.job_size; ++r) {
    if (r == im.self) continue;
    if (peers[r].gone) {
      // It ended before this member joined: nothing goes to it, nothing comes from it.
      std::lock_guard lock(im.mu);
      im.peers[r].lost = true;
      im.peers[r].stats.lost_reason = "it ended before this member joined";
      for (auto& [k, in] : im.ins) {
        if (k.peer == r) Impl::end_empty(in);
      }
      continue;
    }
    if (Status s = im.create_endpoint(r, peers[r].address); !s) return s;
  }
  im.connected = true;
  {
    std::lock_guard lock(im.mu);
    im.offer_on_hello = late;
  }
  for (uint32_t r = 0; r < im.job_size; ++r) {
    if (r != im.self && im.eps[r] != nullptr) {
      im.send_hello(r);
      std::lock_guard lock(im.mu);
      if (!late) im.offer_shared_locked(r, peers[r].hostname);
    }
  }
  if (im.opts.progress == ProgressMode::kAdaptive) {
    im.progress = std::thread([this] {
      impl_->pin_this_thread();
      impl_->run_progress();
    });
  } else {
    im.progress = std::thread([this] {
      impl_->pin_this_thread();
      impl_->run_keepalive();
    });
  }
  return {};
}

void Node::await_greetings(std::chrono::milliseconds timeout) {
  auto& im = *impl_;
  std::unique_lock lock(im.mu);
  // Those in the table; members that join meanwhile greet us when they learn of us.
  const uint32_t known = im.job_size;
  auto waiting_for = [&](uint32_t r) {
    const auto& p = im.peers[r];
    return r != im.self && !p.lost && !p.bye && !p.departed && !p.greeted;
  };
  auto greeted = [&] {
    for (uint32_t r = 0; r < known; ++r) {
      if (waiting_for(r)) return false;
    }
    return true;
  };
  const auto deadline = Clock::now() + timeout;
  while (!greeted() && Clock::now() < deadline) {
    if (im.opts.progress == ProgressMode::kSpin) {
      lock.unlock();
      if (!im.step_inline()) sched_yield();
      lock.lock();
      continue;
    }
    im.cv.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(50)));
  }
  for (uint32_t r = 0; r < known; ++r) {
    if (waiting_for(r)) {
      im.lose_peer_locked(
          r, "it did not greet this late member within " + std::to_string(timeout.count()) + " ms");
    }
  }
  im.bump();
}

void Node::add_peer(const PeerInfo& peer) {
  auto& im = *impl_;
  if (peer.rank != im.job_size) {
    SLUICE_LOG_ERROR("ignoring joined member %s/%u with rank %u: expected rank %u",
                     peer.location.c_str(), peer.member, peer.rank, im.job_size);
    return;
  }
  const uint32_t r = peer.rank;
  im.grow_to(r + 1);
  im.last_rx_ns[r] = now_ns();
  {
    std::lock_guard lock(im.mu);
    im.peer_names[r] = peer.location + "/" + std::to_string(peer.member);
    if (peer.gone) {
      // A late member that ended before it registered: its rank is taken, nothing else.
      im.peers[r].lost = true;
      im.peers[r].stats.lost_reason = "it ended before it joined";
      im.joined.push_back(peer);
      im.bump();
      return;
    }
    if (auto it = im.join_rules.find(peer.location); it != im.join_rules.end()) {
      for (uint32_t e : it->second.in_edges) im.ins[{e, r}].late = true;
      for (uint32_t e : it->second.out_edges) im.outs[{e, r}];
    }
    im.joined.push_back(peer);
  }
  Status s = im.create_endpoint(r, peer.address);
  std::lock_guard lock(im.mu);
  if (!s) {
    im.lose_peer_locked(r, s.error());
  } else {
    SLUICE_LOG_INFO("%s joined the job (rank %u)", im.peer_names[r].c_str(), r);
    im.send_hello(r);  // posted: goes out before anything the runtime sends it
    im.offer_shared_locked(r, peer.hostname);
  }
  im.bump();
}

std::vector<PeerInfo> Node::take_joined() {
  std::lock_guard lock(impl_->mu);
  return std::exchange(impl_->joined, {});
}

uint32_t Node::job_size() const {
  std::lock_guard lock(impl_->mu);
  return impl_->job_size;
}

SendStatus Node::send_data(uint32_t edge, uint32_t dst, uint64_t tick, uint32_t count, size_t bytes,
                           const std::function<void(uint8_t*)>& encode) {
  return send_data(
      edge, dst, tick, count, bytes, [&encode](uint8_t* p, std::vector<FrameHole>&) { encode(p); },
      nullptr);
}

SendStatus Node::send_data(uint32_t edge, uint32_t dst, uint64_t tick, uint32_t count, size_t bytes,
                           const std::function<void(uint8_t*, std::vector<FrameHole>&)>& encode,
                           std::shared_ptr<const void> keepalive,
                           std::chrono::microseconds max_wait, bool split) {
  auto& im = *impl_;
  uint64_t seq;
  {
    std::unique_lock lock(im.mu);
    auto it = im.outs.find({edge, dst});
    assert(it != im.outs.end() && "send on an undeclared channel");
    if (it == im.outs.end()) return SendStatus::kShutdown;
    Impl::OutChannel& out = it->second;
    uint64_t need = bytes + 128;
    const auto started = Clock::now();
    // Wait while the frame does not fit, but never once a quarter window or less is in flight:
    // the receiver returns credit in quarter-window steps, so waiting then could last forever
    // (a frame larger than the window would never go). In flight stays below
    // window/4 + one frame.
    while (!im.peers[dst].lost && !im.stop.load() && out.in_flight > im.opts.window_bytes / 4 &&
           out.in_flight + need > im.opts.window_bytes) {
      // Back-pressure time runs from the first full window to the send that goes through,
      // across calls that gave up with kWouldBlock.
      if (out.blocked_since == Clock::time_point{}) out.blocked_since = started;
      // (Compared in microseconds: max_wait may be microseconds::max(), which overflows ns.)
      if (std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started) >=
          max_wait) {
        return SendStatus::kWouldBlock;
      }
      if (im.opts.progress == ProgressMode::kSpin) {
        lock.unlock();
        if (!im.step_inline()) sched_yield();
        lock.lock();
        continue;
      }
      im.cv.wait_for(lock, std::chrono::milliseconds(50));
    }
    if (im.peers[dst].lost) return SendStatus::kPeerLost;
    if (im.stop.load()) return SendStatus::kShutdown;
    if (out.blocked_since != Clock::time_point{}) {
      im.peers[dst].stats.blocked_ns += static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - out.blocked_since)
              .count());
      out.blocked_since = {};
    }
    seq = out.next_seq++;
  }
  DataFrameBuilder b(edge, im.self, dst, seq, tick);
  uint8_t* p = b.reserve_elements(count, bytes);
  std::vector<FrameHole> holes;
  if (bytes > 0) encode(p, holes);
  OwnedFrame f = b.finish();
  if (!holes.empty()) f.set_holes(std::move(holes), std::move(keepalive));
  f.set_split(split);
  {
    std::lock_guard lock(im.mu);
    im.outs[{edge, dst}].in_flight += f.bytes().size();
  }
  Impl::Command c;
  c.dst = dst;
  c.frame = std::move(f);
  im.post(std::move(c));
  if (im.opts.progress == ProgressMode::kSpin) im.step_inline();
  return SendStatus::kOk;
}

void Node::close_output(uint32_t edge, uint32_t dst) {
  auto& im = *impl_;
  uint64_t last;
  {
    std::lock_guard lock(im.mu);
    auto& out = im.outs[{edge, dst}];
    if (out.closed) return;
    out.closed = true;
    last = out.next_seq - 1;
    if (im.peers[dst].lost) return;
  }
  ControlMsg m = im.control_to(dst, ControlKind::kClose);
  m.edge = edge;
  m.value = last;
  im.post_control(m);
}

bool Node::outputs_drained() const {
  std::lock_guard lock(impl_->mu);
  for (const auto& [k, out] : impl_->outs) {
    if (impl_->peers[k.peer].lost) continue;
    if (!out.closed || !out.acked) return false;
  }
  return true;
}

size_t Node::take(uint32_t edge, std::vector<RxFrame>& out, size_t max_frames, size_t max_bytes) {
  auto& im = *impl_;
  size_t n = 0, bytes = 0;
  std::vector<ControlMsg> acks;
  {
    std::lock_guard lock(im.mu);
    for (auto it = im.ins.lower_bound({edge, 0}); it != im.ins.end() && it->first.edge == edge;
         ++it) {
      auto& in = it->second;
      // Every channel with a frame gives at least one, so no sender waits on another's backlog.
      for (size_t here = 0;
           !in.ready.empty() && (here == 0 || (n < max_frames && bytes < max_bytes)); ++here) {
        bytes += in.ready.front().wire_bytes_;
        out.push_back(std::move(in.ready.front()));
        in.ready.pop_front();
        ++n;
      }
      if (in.ready.empty() && Impl::channel_closed(in) && !in.close_acked) {
        in.close_acked = true;
        ControlMsg m = im.control_to(it->first.peer, ControlKind::kCloseAck);
        m.edge = edge;
        m.value = in.close_at == UINT64_MAX ? 0 : in.close_at;
        acks.push_back(m);
      }
    }
  }
  for (auto& m : acks) im.post_control(m);
  return n;
}

bool Node::input_cut(uint32_t edge) const {
  auto& im = *impl_;
  std::lock_guard lock(im.mu);
  for (auto it = im.ins.lower_bound({edge, 0}); it != im.ins.end() && it->first.edge == edge;
       ++it) {
    if (!Impl::channel_closed(it->second)) return true;
  }
  return false;
}

bool Node::input_finished(uint32_t edge) const {
  auto& im = *impl_;
  std::lock_guard lock(im.mu);
  for (auto it = im.ins.lower_bound({edge, 0}); it != im.ins.end() && it->first.edge == edge;
       ++it) {
    const auto& in = it->second;
    if (!in.ready.empty()) return false;
    // A closed channel counts as finished only once take() has acknowledged it: the sender
    // waits for that CloseAck before it exits.
    bool ended = in.close_acked || in.broken || im.peers[it->first.peer].lost;
    if (!ended) return false;
  }
  return true;
}

void Node::release(RxFrame& f) {
  auto& im = *impl_;
  if (f.ucx_data_ != nullptr) {
    Impl::Command c;
    c.kind = Impl::Command::kRelease;
    c.ucx_data = f.ucx_data_;
    im.post(std::move(c));
  }
  bool credit = false;
  uint64_t bytes = 0;
  {
    std::lock_guard lock(im.mu);
    auto it = im.ins.find({f.view_.edge, f.view_.src});
    if (it != im.ins.end() && !im.peers[f.view_.src].lost) {
      it->second.consumed += f.wire_bytes_;
      // A closed channel's sender sends nothing more: it needs no credit.
      if (it->second.consumed >= im.opts.window_bytes / 4 && !Impl::channel_closed(it->second)) {
        bytes = std::exchange(it->second.consumed, 0);
        credit = true;
      }
    }
  }
  if (credit) {
    ControlMsg m = im.control_to(f.view_.src, ControlKind::kCredit);
    m.edge = f.view_.edge;
    m.value = bytes;
    im.post_control(m);
  }
}

uint64_t Node::activity() const { return impl_->activity.load(std::memory_order_acquire); }

bool Node::wait_activity(uint64_t seen, std::chrono::microseconds timeout) {
  auto& im = *impl_;
  auto deadline = Clock::now() + timeout;
  if (im.opts.progress == ProgressMode::kSpin) {
    while (im.activity.load(std::memory_order_acquire) == seen) {
      if (!im.step_inline()) sched_yield();
      if (im.activity.load(std::memory_order_acquire) != seen) break;
      if (Clock::now() >= deadline) return false;
    }
    return true;
  }
  std::unique_lock lock(im.mu);
  bool moved = im.cv.wait_until(
      lock, deadline, [&] { return im.activity.load(std::memory_order_acquire) != seen; });
  return moved;
}

void Node::peer_left(uint32_t rank) {
  auto& im = *impl_;
  std::lock_guard lock(im.mu);
  if (rank >= im.job_size || rank == im.self) return;
  im.peers[rank].departed = true;
  // A member exits 0 only once everything it sent on a channel it knew of was acknowledged, so a
  // channel from it that a join made and that is still open and empty was never used.
  for (auto& [k, in] : im.ins) {
    if (k.peer == rank && Impl::unused_late(in)) Impl::end_empty(in);
  }
  im.bump();
}

void Node::mark_peer_lost(uint32_t rank, const std::string& reason) {
  std::lock_guard lock(impl_->mu);
  if (rank < impl_->job_size) impl_->lose_peer_locked(rank, reason);
  impl_->bump();
}

bool Node::peer_lost(uint32_t rank) const {
  std::lock_guard lock(impl_->mu);
  return rank < impl_->job_size && impl_->peers[rank].lost;
}

void Node::shutdown() {
  auto& im = *impl_;
  if (im.shut) return;
  {
    std::lock_guard lock(im.progress_mu);  // spin mode: no runtime thread is mid-step after this
    im.shut = true;
  }
  im.stop.store(true, std::memory_order_release);
  {
    std::lock_guard lock(im.mu);
    im.cv.notify_all();
  }
  uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(im.wake_fd, &one, sizeof one);
  if (im.progress.joinable()) im.progress.join();
  if (im.opts.progress == ProgressMode::kSpin && im.connected) {
    std::lock_guard lock(im.progress_mu);
    im.finish_on_progress_thread();
  }
}

void Node::progress() {
  if (impl_->opts.progress == ProgressMode::kSpin) impl_->step_inline();
}

std::vector<PeerStats> Node::stats() const {
  std::lock_guard lock(impl_->mu);
  std::vector<PeerStats> out;
  for (const auto& p : impl_->peers) {
    out.push_back(p.stats);
    out.back().lost = p.lost;
    out.back().maps_shared = p.shared_ok;
  }
  return out;
}

uint64_t Node::rejected_frames() const {
  std::lock_guard lock(impl_->mu);
  uint64_t n = impl_->rejected_unattributed;
  for (const auto& p : impl_->peers) n += p.stats.frames_rejected;
  return n;
}

}  // namespace sluice::transport
