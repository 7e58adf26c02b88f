// MemberPlacement: where one member's threads run — its share of the host's cores
// (transport::plan_share), a TBB arena sized to that share, and an observer that pins every
// thread entering the arena into it.
//
//   auto p = MemberPlacement::create(opts.bind, local_index, local_count);
//   if (!p) return fail(p.error());
//   SLUICE_LOG_INFO("%s", (*p)->describe().c_str());
//   topts.cpu_share = (*p)->share();              // the Node's progress thread joins the share
//   (*p)->execute([&] { graph.wait_for_all(); });  // the member's work, pinned
//
// Ownership: the placement owns its arena and observer; it must outlive every execute() call.
// Threads: create() from a thread that is not pinned yet (oneTBB sizes its worker pool from the
// first caller's affinity); execute() from any thread. Binding failures are logged once, not
// returned: they cost locality, never correctness. With BindMode::kNone nothing is pinned.
#pragma once

#include <oneapi/tbb/task_arena.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sluice/transport/placement.hpp"
#include "sluice/transport/result.hpp"

namespace sluice::detail {

class MemberPlacement {
 public:
  static Result<std::unique_ptr<MemberPlacement>> create(transport::BindMode mode,
                                                         uint32_t local_index,
                                                         uint32_t local_count);
  ~MemberPlacement();
  MemberPlacement(const MemberPlacement&) = delete;
  MemberPlacement& operator=(const MemberPlacement&) = delete;

  const transport::CpuShare& share() const { return share_; }
  bool binds() const { return share_.binds(); }
  // The arena's size: the share's PUs (at least 1).
  int concurrency() const { return static_cast<int>(share_.pus.size()); }

  // Runs f inside the member's arena, the calling thread pinned into the share for the call
  // (its earlier binding comes back afterwards). Nested calls on one thread pin once.
  template <typename F>
  decltype(auto) execute(F&& f) {
    PinScope pin(*this);
    return arena_.execute(std::forward<F>(f));
  }

  // One line for --sluice-verbose, e.g.
  // "placement: local 1/2, bind core (auto): core 1 (PU 1), numa 0; arena of 1 thread"
  std::string describe() const;

  // For the arena observer: pins a thread entering the arena (unless it already is pinned
  // here), and returns a worker that leaves to the process's whole allowed set.
  void pin_entering_thread();
  void unpin_leaving_worker();

 private:
  class Observer;
  // Pins the calling thread for one execute() and restores its earlier binding.
  class PinScope {
   public:
    explicit PinScope(MemberPlacement& p);
    ~PinScope();
    PinScope(const PinScope&) = delete;
    PinScope& operator=(const PinScope&) = delete;

   private:
    MemberPlacement& p_;
    bool pinned_ = false;
    uint64_t outer_ = 0;  // the placement the thread was pinned to before (0: none)
    std::vector<unsigned> before_;
  };

  MemberPlacement(transport::BindMode asked, uint32_t local_index, uint32_t local_count,
                  transport::CpuShare share, std::vector<unsigned> allowed);
  void warn_once(const std::string& what);

  const uint64_t id_;  // names this placement in a thread's "pinned to" mark; never reused
  transport::BindMode asked_;
  uint32_t local_index_;
  uint32_t local_count_;
  transport::CpuShare share_;
  std::vector<unsigned> allowed_;  // the process's whole set, for workers that leave
  std::atomic<bool> warned_{false};
  tbb::task_arena arena_;  // member order: the observer detaches before the arena goes
  std::unique_ptr<Observer> observer_;
};

}  // namespace sluice::detail
