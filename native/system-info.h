#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "cpu-variants.h"

namespace mmlm {

struct DeviceInfo {
    std::string name;
    std::string description;
    std::string type;  // "cpu", "gpu", "igpu", "accel"
    std::string backend;
    size_t memoryFree = 0;
    size_t memoryTotal = 0;
};

struct SystemInfo {
    std::string llamaCppCommit;
    std::string backend;  // the build's selected backend: cpu, metal, cuda, vulkan
    std::vector<std::string> backends;
    std::vector<DeviceInfo> devices;
    std::vector<std::string> cpuFeatures;
    CpuVariantChoice cpuVariant;
    std::string mediaMarker;
    std::string llamaSystemInfo;
};

// Backends must be initialised (engineInit) before this is called.
SystemInfo collectSystemInfo();

const char* defaultMediaMarker();

// Initialises llama.cpp backends and log routing (see log-routing.h); idempotent.
void engineInit();

}  // namespace mmlm
