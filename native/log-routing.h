#pragma once
// Routes llama.cpp, ggml and mtmd log output. Lines logged on a thread that has a
// LogSink installed go to that sink (one per model, so each MultimodalLM gets its
// own logger); everything else goes to stderr only when MULTIMODAL_LM_LOG is set.
#include <deque>
#include <functional>
#include <mutex>
#include <string>

namespace mmlm {

// ggml_log_level values: DEBUG=1, INFO=2, WARN=3, ERROR=4.
class LogSink {
 public:
    using Forward = std::function<void(int level, const std::string& line)>;

    // minLevel 0 forwards nothing; error lines are always kept for error messages.
    LogSink(int minLevel, Forward forward) : minLevel_(minLevel), forward_(std::move(forward)) {}

    void write(int level, const char* text);
    // The error lines seen since the last call, joined; clears them.
    std::string takeErrors();

 private:
    void flushLine();

    int minLevel_;
    Forward forward_;
    int level_ = 2;
    std::string line_;
    std::mutex mutex_;
    std::deque<std::string> errors_;
};

// Installs `sink` for the current thread until destroyed.
class ScopedLogSink {
 public:
    explicit ScopedLogSink(LogSink* sink);
    ~ScopedLogSink();
    ScopedLogSink(const ScopedLogSink&) = delete;
    ScopedLogSink& operator=(const ScopedLogSink&) = delete;

 private:
    LogSink* previous_;
};

// Sets the process-wide llama/ggml/mtmd log callbacks (once).
void installLogRouting();

}  // namespace mmlm
