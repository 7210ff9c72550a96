// llama.cpp's RPC backend (GGML_RPC): see rpc.h.
#include "rpc.h"

#include <mutex>
#include <set>
#include <thread>

#include "common.h"
#include "engine.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml-rpc.h"

namespace mmlm {

namespace {
std::mutex rpcMutex;
std::set<std::string> registered;
}  // namespace

void addRpcServers(const std::vector<std::string>& endpoints) {
    std::lock_guard<std::mutex> lock(rpcMutex);
    for (const std::string& endpoint : endpoints) {
        if (registered.count(endpoint) != 0) continue;
        ggml_backend_reg_t reg = ggml_backend_rpc_add_server(endpoint.c_str());
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
    std::thread([endpoint, cacheDir, threads, cpu]() mutable {
        ggml_backend_dev_t devices[] = {cpu};
        ggml_backend_rpc_start_server(endpoint.c_str(), cacheDir.empty() ? nullptr : cacheDir.c_str(),
                                      static_cast<size_t>(threads), 1, devices);
    }).detach();
}

}  // namespace mmlm
