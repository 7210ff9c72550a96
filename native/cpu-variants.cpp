// See cpu-variants.h.
#include "cpu-variants.h"

#ifdef MULTIMODAL_LM_CPU_VARIANTS
#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "ggml-backend.h"
#endif

namespace mmlm {

namespace {

CpuVariantChoice choice;

#ifdef MULTIMODAL_LM_CPU_VARIANTS

std::vector<std::string> builtVariants() {
    std::vector<std::string> out;
    std::stringstream list(MULTIMODAL_LM_CPU_VARIANTS);
    std::string name;
    while (std::getline(list, name, ',')) {
        if (!name.empty()) out.push_back(name);
    }
    return out;
}

// Variants compiled with AMX instructions (llama.cpp's x86 table: only sapphirerapids).
bool usesAmx(const std::string& variant) { return variant == "sapphirerapids"; }

// Linux runs AMX code only after a process asks for the tile data state; a VM or kernel that
// does not grant it faults on the first AMX instruction, whatever CPUID says.
std::string amxRefusal() {
#if defined(__x86_64__) && defined(SYS_arch_prctl)
    constexpr int ARCH_REQ_XCOMP_PERM = 0x1023;
    constexpr int XFEATURE_XTILEDATA = 18;
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0) return "";
    return std::string("the kernel did not grant AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM: ") +
           std::strerror(errno) + ")";
#else
    return "AMX needs Linux on x86-64";
#endif
}

std::string addonDir() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&loadBackendModules), &info) == 0 || info.dli_fname == nullptr) return "";
    return std::filesystem::path(info.dli_fname).parent_path().string();
}

std::string variantFile(const std::string& dir, const std::string& name) {
    return (std::filesystem::path(dir) / ("libggml-cpu-" + name + ".so")).string();
}

void rate(CpuVariantCandidate& c, const std::string& dir) {
    const std::string file = variantFile(dir, c.name);
    if (!std::filesystem::exists(file)) {
        c.note = "missing: " + file;
        return;
    }
    void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        const char* error = dlerror();
        c.note = std::string("cannot be loaded: ") + (error != nullptr ? error : "unknown error");
        return;
    }
    using ScoreFn = int (*)();
    auto score = reinterpret_cast<ScoreFn>(dlsym(handle, "ggml_backend_score"));
    if (score == nullptr) {
        c.note = "has no ggml_backend_score";
    } else {
        c.score = score();
        if (c.score == 0) {
            c.note = "this CPU lacks an instruction set it needs";
        } else if (usesAmx(c.name)) {
            c.note = amxRefusal();
        }
        c.usable = c.score > 0 && c.note.empty();
    }
    dlclose(handle);
}

#endif

}  // namespace

void loadBackendModules() {
#ifdef MULTIMODAL_LM_CPU_VARIANTS
    namespace fs = std::filesystem;
    choice.dynamic = true;
    choice.dir = addonDir();
    if (choice.dir.empty()) {
        choice.reason = "the addon's folder could not be found (dladdr failed), so no CPU backend was loaded";
        return;
    }
    // Other backends first, as ggml_backend_load_all() does: the RPC client.
    std::error_code ec;
    for (const fs::directory_entry& entry : fs::directory_iterator(choice.dir, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind("libggml-", 0) == 0 && name.rfind("libggml-cpu-", 0) != 0 && entry.path().extension() == ".so") {
            ggml_backend_load(entry.path().string().c_str());
        }
    }

    const CpuVariantCandidate* best = nullptr;
    for (const std::string& name : builtVariants()) {
        CpuVariantCandidate c;
        c.name = name;
        rate(c, choice.dir);
        choice.candidates.push_back(c);
    }
    for (const CpuVariantCandidate& c : choice.candidates) {
        if (c.usable && (best == nullptr || c.score > best->score)) best = &c;
    }
    if (best != nullptr) {
        std::string why = "the highest-scoring variant this CPU supports";
        for (const CpuVariantCandidate& c : choice.candidates) {
            if (c.score > best->score && !c.usable) why += "; " + c.name + " is faster but " + c.note;
        }
        choice.chosen = best->name;
        choice.reason = why;
    }
    const char* forced = std::getenv("MULTIMODAL_LM_CPU_VARIANT");
    if (forced != nullptr && *forced != '\0') {
        const CpuVariantCandidate* named = nullptr;
        for (const CpuVariantCandidate& c : choice.candidates) {
            if (c.name == forced) named = &c;
        }
        if (named != nullptr && named->usable) {
            choice.chosen = named->name;
            choice.reason = "MULTIMODAL_LM_CPU_VARIANT=" + named->name;
        } else {
            std::string names;
            for (const CpuVariantCandidate& c : choice.candidates) names += (names.empty() ? "" : ", ") + c.name;
            const std::string why = named == nullptr ? "is not one of this build's variants (" + names + ")"
                                                     : "cannot run here: " + named->note;
            choice.reason = "MULTIMODAL_LM_CPU_VARIANT=" + std::string(forced) + " " + why + "; using " +
                            (choice.chosen.empty() ? "none" : choice.chosen) + ", " + choice.reason;
            std::fprintf(stderr, "[multimodal-lm] warning: %s\n", choice.reason.c_str());
        }
    }
    if (choice.chosen.empty()) {
        choice.reason = "no CPU variant can run here (see candidates); reinstall the package or build from source";
        return;
    }
    if (ggml_backend_load(variantFile(choice.dir, choice.chosen).c_str()) == nullptr) {
        choice.reason = "the " + choice.chosen + " variant failed to load";
        choice.chosen.clear();
    }
#endif
}

const CpuVariantChoice& cpuVariantChoice() { return choice; }

}  // namespace mmlm
