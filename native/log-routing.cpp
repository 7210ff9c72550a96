#include "log-routing.h"

#include <cstdio>
#include <cstdlib>

#include "ggml.h"
#include "llama.h"
#include "log.h"  // common/log.h
#include "mtmd-helper.h"

namespace mmlm {

namespace {

thread_local LogSink* currentSink = nullptr;

bool stderrEnabled() {
    static const bool enabled = [] {
        const char* value = std::getenv("MULTIMODAL_LM_LOG");
        return value != nullptr && value[0] != '\0' && std::string(value) != "0";
    }();
    return enabled;
}

void route(enum ggml_log_level level, const char* text, void* /*user*/) {
    if (text == nullptr) return;
    if (currentSink != nullptr) {
        currentSink->write(static_cast<int>(level), text);
    } else if (stderrEnabled() && level != GGML_LOG_LEVEL_NONE) {
        std::fputs(text, stderr);
    }
}

}  // namespace

void LogSink::write(int level, const char* text) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (level != GGML_LOG_LEVEL_CONT && level != GGML_LOG_LEVEL_NONE) {
        if (!line_.empty() && level != level_) flushLine();
        level_ = level;
    }
    for (const char* p = text; *p != '\0'; ++p) {
        if (*p == '\n') {
            flushLine();
        } else {
            line_.push_back(*p);
        }
    }
}

void LogSink::flushLine() {
    if (line_.empty()) return;
    if (level_ == GGML_LOG_LEVEL_ERROR) {
        errors_.push_back(line_);
        if (errors_.size() > 16) errors_.pop_front();
    }
    if (minLevel_ > 0 && level_ >= minLevel_ && forward_) forward_(level_, line_);
    line_.clear();
}

std::string LogSink::takeErrors() {
    std::lock_guard<std::mutex> lock(mutex_);
    flushLine();
    std::string out;
    for (const std::string& e : errors_) {
        if (!out.empty()) out += "; ";
        out += e;
    }
    errors_.clear();
    return out;
}

ScopedLogSink::ScopedLogSink(LogSink* sink) : previous_(currentSink) { currentSink = sink; }
ScopedLogSink::~ScopedLogSink() { currentSink = previous_; }

void installLogRouting() {
    static std::once_flag once;
    std::call_once(once, [] {
        llama_log_set(route, nullptr);
        mtmd_helper_log_set(route, nullptr);  // also sets mtmd's and clip's logger
        // common/ logs through its own printer thread straight to stdout/stderr; keep it quiet.
        common_log_set_verbosity_thold(-1);
    });
}

}  // namespace mmlm
