// llama.cpp's RPC backend (GGML_RPC): see rpc.h.
#include "rpc.h"

#include <mutex>
#include <set>
#include <thread>

#include "common.h"
#include "engine.h"
#include "ggml-backend.h"
#include "ggml-rpc.h"

namespace mmlm {

namespace {
std::mutex rpcMutex;
std::set<std::string> registered;

// Looked up through the RPC backend's registry entry: it is a loadable module in builds with
// runtime CPU variants (nothing to link against) and linked in elsewhere.
template <typename Fn>
Fn* rpcFunction(const char* name) {
    ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
    Fn* fn = reg == nullptr ? nullptr : reinterpret_cast<Fn*>(ggml_backend_reg_get_proc_address(reg, name));
    if (fn == nullptr) {
        throw CodedError("E_ENGINE", std::string("this build of the addon has no RPC backend (") + name +
                                         " is missing); rebuild it from source");
    }
    return fn;
}
}  // namespace

void addRpcServers(const std::vector<std::string>& endpoints) {
    std::lock_guard<std::mutex> lock(rpcMutex);
    for (const std::string& endpoint : endpoints) {
        if (registered.count(endpoint) != 0) continue;
        ggml_backend_reg_t reg =
            rpcFunction<decltype(ggml_backend_rpc_add_server)>("ggml_backend_rpc_add_server")(endpoint.c_str());
        if (reg == nullptr) {
            throw CodedError("E_MODEL_LOAD", "the RPC server at " + endpoint + " has no devices to offer");
        }
        ggml_backend_register(reg);
        registered.insert(endpoint);
    }
}

std::vector<std::string> rpcDevices() {
    std::vector<std::string> out;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        if (std::string(ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev))) != "RPC") continue;
        out.push_back(std::string(ggml_backend_dev_name(dev)) + " (" + ggml_backend_dev_description(dev) + ")");
    }
    return out;
}

void startRpcServer(const std::string& endpoint, const std::string& cacheDir, int threads) {
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (cpu == nullptr) throw CodedError("E_ENGINE", "no CPU backend to serve");
    if (threads <= 0) threads = common_cpu_get_num_math();
    auto startServer = rpcFunction<decltype(ggml_backend_rpc_start_server)>("ggml_backend_rpc_start_server");
    std::thread([endpoint, cacheDir, threads, cpu, startServer]() mutable {
        ggml_backend_dev_t devices[] = {cpu};
        startServer(endpoint.c_str(), cacheDir.empty() ? nullptr : cacheDir.c_str(), static_cast<size_t>(threads), 1,
                    devices);
    }).detach();
}

}  // namespace mmlm
