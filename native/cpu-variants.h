#pragma once

// Runtime choice of the CPU backend variant (Linux x86-64 CPU builds, where CMakeLists.txt
// builds llama.cpp's CPU backend as loadable variants beside the addon). Elsewhere the CPU
// backend is linked in and `dynamic` is false.

#include <string>
#include <vector>

namespace mmlm {

struct CpuVariantCandidate {
    std::string name;  // llama.cpp's variant name: x64, haswell, zen4, sapphirerapids, ...
    int score = 0;     // ggml_backend_score(): 0 when this CPU lacks what the variant needs
    bool usable = false;
    std::string note;  // why it is not usable, when it is not
};

struct CpuVariantChoice {
    bool dynamic = false;  // variants are loaded at run time (else linked in)
    std::string dir;       // where the variants were looked for (the addon's folder)
    std::string chosen;    // the variant loaded, or "" when none could be
    std::string reason;    // why that one
    std::vector<CpuVariantCandidate> candidates;
};

// Loads the backend modules beside the addon: every non-CPU one (RPC) and the best CPU variant
// this CPU and OS allow (MULTIMODAL_LM_CPU_VARIANT names one to use instead). Call once, before
// llama_backend_init(); a no-op in builds without loadable backends.
void loadBackendModules();

const CpuVariantChoice& cpuVariantChoice();

}  // namespace mmlm
