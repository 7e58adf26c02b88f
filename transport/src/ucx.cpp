#include "ucx.hpp"

#include <dirent.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>

#include "sluice/transport/log.hpp"

namespace sluice::transport::detail {

std::string ucs_error(const char* what, ucs_status_t s) {
  return std::string(what) + " failed: " + ucs_status_string(s);
}

const char* tls_for(TransportKind kind) {
  switch (kind) {
    case TransportKind::kAuto:
      return "";
    case TransportKind::kShm:
      return "sm,self";
    case TransportKind::kTcp:
      return "tcp,self";
    case TransportKind::kRdma:
      return "ib,self";
  }
  return "";
}

namespace {

// RDMA needs a device; UCX would otherwise fail later with a vaguer message (or, with a looser
// transport list, silently fall back to something else — which is exactly what we refuse).
bool rdma_device_present() {
  DIR* d = opendir("/sys/class/infiniband");
  if (d == nullptr) return false;
  bool found = false;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') found = true;
  }
  closedir(d);
  return found;
}

}  // namespace

Result<UcpContext> UcpContext::create(TransportKind kind, const std::string& name) {
  if (kind == TransportKind::kRdma && !rdma_device_present()) {
    return make_error(
        "--sluice-transport rdma: this machine has no RDMA device (/sys/class/infiniband is "
        "empty); use shm or tcp");
  }
  ucp_config_t* config = nullptr;
  ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
  if (s != UCS_OK) return make_error(ucs_error("ucp_config_read", s));
  const char* tls = tls_for(kind);
  if (*tls != '\0') {
    s = ucp_config_modify(config, "TLS", tls);
    if (s != UCS_OK) {
      ucp_config_release(config);
      return make_error(ucs_error("setting UCX TLS", s));
    }
  }
  // TCP between the members of a one-host job goes over loopback: UCX would otherwise pick the
  // host's external interface. Jobs across hosts name their devices with UCX_NET_DEVICES.
  if (kind == TransportKind::kTcp && std::getenv("UCX_NET_DEVICES") == nullptr) {
    s = ucp_config_modify(config, "NET_DEVICES", "lo");
    if (s != UCS_OK) {
      ucp_config_release(config);
      return make_error(ucs_error("setting UCX NET_DEVICES", s));
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.name = name.c_str();
  UcpContext out;
  s = ucp_init(&params, config, &out.h_);
  ucp_config_release(config);
  if (s != UCS_OK) {
    return make_error(ucs_error((std::string("ucp_init with transport ") + to_string(kind) +
                                 " (UCX_TLS=" + (*tls ? tls : "default") + ")")
                                    .c_str(),
                                s));
  }
  return out;
}

UcpContext::~UcpContext() {
  if (h_ != nullptr) ucp_cleanup(h_);
}

Result<UcpWorker> UcpWorker::create(const UcpContext& ctx) {
  ucp_worker_params_t params{};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_AM_ALIGNMENT;
  // One thread at a time touches the worker (the progress thread; the owner before it starts and
  // after it stops; in spin mode the runtime threads, serialized by the node), so UCX needs no
  // locks of its own.
  params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  // Frames are FlatBuffers with 8-byte scalars; aligned descriptors let us read them in place.
  params.am_alignment = 8;
  UcpWorker out;
  ucs_status_t s = ucp_worker_create(ctx.get(), &params, &out.h_);
  if (s != UCS_OK) return make_error(ucs_error("ucp_worker_create", s));
  return out;
}

UcpWorker::~UcpWorker() {
  if (h_ != nullptr) ucp_worker_destroy(h_);
}

Result<std::vector<uint8_t>> UcpWorker::address() const {
  ucp_address_t* addr = nullptr;
  size_t len = 0;
  ucs_status_t s = ucp_worker_get_address(h_, &addr, &len);
  if (s != UCS_OK) return make_error(ucs_error("ucp_worker_get_address", s));
  std::vector<uint8_t> out(reinterpret_cast<uint8_t*>(addr),
                           reinterpret_cast<uint8_t*>(addr) + len);
  ucp_worker_release_address(h_, addr);
  return out;
}

Result<int> UcpWorker::event_fd() const {
  int fd = -1;
  ucs_status_t s = ucp_worker_get_efd(h_, &fd);
  if (s != UCS_OK) return make_error(ucs_error("ucp_worker_get_efd", s));
  return fd;
}

std::string endpoint_lanes(ucp_ep_h ep) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  if (f == nullptr) return "?";
  ucp_ep_print_info(ep, f);
  std::fclose(f);
  // Lines look like "#   lane[0]:  8:posix/memory.0 md[4] ..."; keep the transport names.
  std::set<std::string> names;
  std::string text(buf, len);
  std::free(buf);
  size_t pos = 0;
  while ((pos = text.find("lane[", pos)) != std::string::npos) {
    size_t colon = text.find(':', pos);
    if (colon == std::string::npos) break;
    size_t p = text.find_first_not_of(' ', colon + 1);
    if (p == std::string::npos) break;
    size_t c2 = text.find(':', p);
    size_t slash = text.find('/', p);
    if (c2 != std::string::npos && slash != std::string::npos && c2 < slash) {
      names.insert(text.substr(c2 + 1, slash - c2 - 1));
    }
    pos = colon;
  }
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out.empty() ? "?" : out;
}

}  // namespace sluice::transport::detail
