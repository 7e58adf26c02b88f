// Move-only owners of UCX handles. Lifetimes nest by member order in the owner that holds them
// (context outlives worker outlives endpoints). Destructors never throw; they log what they could
// not release.
#pragma once

#include <ucp/api/ucp.h>

#include <string>
#include <utility>
#include <vector>

#include "sluice/transport/options.hpp"
#include "sluice/transport/result.hpp"

namespace sluice::transport::detail {

std::string ucs_error(const char* what, ucs_status_t s);

class UcpContext {
 public:
  UcpContext() = default;
  ~UcpContext();
  UcpContext(UcpContext&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  UcpContext& operator=(UcpContext&& o) noexcept {
    std::swap(h_, o.h_);
    return *this;
  }
  // Maps `kind` onto UCX's transport list (TLS) and initialises UCP with active messages and
  // wakeup. Environment variables (UCX_*) still apply to everything not set here.
  static Result<UcpContext> create(TransportKind kind, const std::string& name);
  ucp_context_h get() const { return h_; }

 private:
  ucp_context_h h_ = nullptr;
};

class UcpWorker {
 public:
  UcpWorker() = default;
  ~UcpWorker();
  UcpWorker(UcpWorker&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  UcpWorker& operator=(UcpWorker&& o) noexcept {
    std::swap(h_, o.h_);
    return *this;
  }
  static Result<UcpWorker> create(const UcpContext& ctx);
  ucp_worker_h get() const { return h_; }
  Result<std::vector<uint8_t>> address() const;
  Result<int> event_fd() const;

 private:
  ucp_worker_h h_ = nullptr;
};

// Returns the transports UCX chose for an endpoint, e.g. "posix,cma" or "tcp".
std::string endpoint_lanes(ucp_ep_h ep);

// The UCX TLS value for a transport kind ("" for auto: UCX decides).
const char* tls_for(TransportKind kind);

}  // namespace sluice::transport::detail
