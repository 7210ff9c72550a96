#include "system-info.h"

#include <cstdio>
#include <mutex>

#include "ggml-backend.h"
#include "llama.h"
#include "log-routing.h"
#include "mtmd.h"

namespace mmlm {

namespace {

const char* deviceTypeName(enum ggml_backend_dev_type type) {
    switch (type) {
        case GGML_BACKEND_DEVICE_TYPE_CPU:
            return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU:
            return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU:
            return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL:
            return "accel";
        default:
            return "unknown";
    }
}

std::once_flag initOnce;

}  // namespace

void engineInit() {
    std::call_once(initOnce, [] {
        installLogRouting();
        loadBackendModules();
        llama_backend_init();
        ggml_time_init();
    });
}

const char* defaultMediaMarker() { return mtmd_default_marker(); }

SystemInfo collectSystemInfo() {
    SystemInfo info;
    info.llamaCppCommit = MULTIMODAL_LM_LLAMA_COMMIT;
    info.backend = MULTIMODAL_LM_BACKEND;
    info.mediaMarker = mtmd_default_marker();
    info.llamaSystemInfo = llama_print_system_info();
    info.cpuVariant = cpuVariantChoice();

    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        ggml_backend_reg_t reg = ggml_backend_reg_get(i);
        info.backends.emplace_back(ggml_backend_reg_name(reg));

        auto getFeatures = reinterpret_cast<ggml_backend_get_features_t>(
            ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"));
        if (getFeatures != nullptr && std::string(ggml_backend_reg_name(reg)) == "CPU") {
            for (ggml_backend_feature* f = getFeatures(reg); f->name != nullptr; ++f) {
                info.cpuFeatures.emplace_back(f->name);
            }
        }
    }

    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        DeviceInfo d;
        d.name = ggml_backend_dev_name(dev);
        d.description = ggml_backend_dev_description(dev);
        d.type = deviceTypeName(ggml_backend_dev_type(dev));
        d.backend = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));
        ggml_backend_dev_memory(dev, &d.memoryFree, &d.memoryTotal);
        info.devices.push_back(std::move(d));
    }
    return info;
}

}  // namespace mmlm
