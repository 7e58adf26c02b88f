#include "placement.hpp"

#include <oneapi/tbb/task_scheduler_observer.h>

#include "sluice/transport/log.hpp"

namespace sluice::detail {
namespace {

// The placement the calling thread is pinned into now (0: none of ours). An id rather than a
// pointer: a later placement at the same address must not look like one a worker still carries.
thread_local uint64_t t_pinned_to = 0;
std::atomic<uint64_t> next_id{1};

}  // namespace

// Pins each thread that enters the arena, TBB worker or not; a worker that leaves goes back to
// the whole allowed set, so it carries no member's share into another arena.
class MemberPlacement::Observer final : public tbb::task_scheduler_observer {
 public:
  Observer(tbb::task_arena& arena, MemberPlacement& owner)
      : tbb::task_scheduler_observer(arena), owner_(owner) {
    observe(true);
  }
  // Detach here, not in the base destructor: a callback still running needs owner_.
  ~Observer() override { observe(false); }

  void on_scheduler_entry(bool /*is_worker*/) override { owner_.pin_entering_thread(); }
  void on_scheduler_exit(bool is_worker) override {
    if (is_worker) owner_.unpin_leaving_worker();  // an execute() caller restores its own
  }

 private:
  MemberPlacement& owner_;
};

Result<std::unique_ptr<MemberPlacement>> MemberPlacement::create(transport::BindMode mode,
                                                                 uint32_t local_index,
                                                                 uint32_t local_count) {
  auto topo = transport::machine_topology();
  if (!topo) return std::move(topo).take_error();
  auto share = transport::plan_share(**topo, mode, local_index, local_count);
  if (!share) return std::move(share).take_error();
  std::unique_ptr<MemberPlacement> p(new MemberPlacement(
      mode, local_index, local_count, std::move(*share), (*topo)->allowed_pus()));
  return p;
}

MemberPlacement::MemberPlacement(transport::BindMode asked, uint32_t local_index,
                                 uint32_t local_count, transport::CpuShare share,
                                 std::vector<unsigned> allowed)
    : id_(next_id.fetch_add(1, std::memory_order_relaxed)),
      asked_(asked),
      local_index_(local_index),
      local_count_(local_count),
      share_(std::move(share)),
      allowed_(std::move(allowed)),
      arena_(static_cast<int>(share_.pus.size())) {
  // Now, before anything is pinned: oneTBB sizes its worker pool from the affinity of the
  // thread that first starts it.
  arena_.initialize();
  if (share_.binds()) observer_ = std::make_unique<Observer>(arena_, *this);
}

MemberPlacement::~MemberPlacement() = default;

void MemberPlacement::warn_once(const std::string& what) {
  if (!warned_.exchange(true, std::memory_order_relaxed)) {
    SLUICE_LOG_WARN("placement: %s (threads run unpinned)", what.c_str());
  }
}

void MemberPlacement::pin_entering_thread() {
  if (t_pinned_to == id_) return;
  t_pinned_to = id_;
  if (auto s = transport::bind_current_thread(share_); !s) warn_once(s.error());
}

void MemberPlacement::unpin_leaving_worker() {
  if (t_pinned_to != id_) return;
  t_pinned_to = 0;
  if (auto s = transport::bind_current_thread_to(allowed_); !s) warn_once(s.error());
}

MemberPlacement::PinScope::PinScope(MemberPlacement& p) : p_(p) {
  if (!p.binds() || t_pinned_to == p.id_) return;
  if (auto b = transport::current_thread_binding()) before_ = std::move(*b);
  outer_ = t_pinned_to;
  t_pinned_to = p.id_;
  pinned_ = true;
  if (auto s = transport::bind_current_thread(p.share_); !s) p.warn_once(s.error());
}

MemberPlacement::PinScope::~PinScope() {
  if (!pinned_) return;
  t_pinned_to = outer_;
  if (before_.empty()) return;  // unknown before: leave it pinned rather than guess
  if (auto s = transport::bind_current_thread_to(before_); !s) p_.warn_once(s.error());
}

std::string MemberPlacement::describe() const {
  std::string out = "placement: local " + std::to_string(local_index_) + "/" +
                    std::to_string(local_count_) + ", bind " + transport::to_string(share_.mode);
  if (asked_ != share_.mode) {
    out += std::string(" (") + transport::to_string(asked_);
    if (asked_ == transport::BindMode::kAuto && !share_.binds()) {
      out += ": " + std::to_string(local_count_) + " processes, " +
             std::to_string(share_.cores.size()) + " cores";
    }
    out += ")";
  }
  out += ": " + share_.describe();
  if (!share_.binds()) out += ", not pinned";
  int n = concurrency();
  out += "; arena of " + std::to_string(n) + (n == 1 ? " thread" : " threads");
  return out;
}

}  // namespace sluice::detail
