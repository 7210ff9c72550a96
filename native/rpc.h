#pragma once
// llama.cpp's RPC backend: other machines' devices for this process's models, and this machine's
// CPU served to others.
#include <string>
#include <vector>

namespace mmlm {

// Registers the RPC servers' devices (once per endpoint per process), so models loaded afterwards
// put layers on them as on GPUs. ggml connects to each server here, and ends the process if one
// cannot be reached (GGML_ABORT): the JS side checks that each answers first.
void addRpcServers(const std::vector<std::string>& endpoints);

// The devices of the registered RPC servers ("RPC0 (127.0.0.1:50052)", ...).
std::vector<std::string> rpcDevices();

// Serves this machine's CPU backend to RPC clients on `endpoint` ("host:port"), on a thread of its
// own, for the life of the process. `cacheDir` empty: no local tensor cache.
void startRpcServer(const std::string& endpoint, const std::string& cacheDir, int threads);

}  // namespace mmlm
