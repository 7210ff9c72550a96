#pragma once
// One running request: its prompt and cursor, its sampler, its text output (stop strings and
// UTF-8 held back), its abort flag and its result. The engine owns one per busy slot.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine.h"
#include "llama.h"
#include "media.h"

struct common_sampler;

namespace mmlm {

// The generated text, handed out in pieces that are complete UTF-8 and can never turn out
// to be the start of a stop string.
class TextOutput {
 public:
    explicit TextOutput(std::vector<std::string> stops);
    // Appends a token's text. Returns true when a stop string now appears (the text is cut
    // before it). Either way, what may be emitted now goes to `emit`.
    bool append(const std::string& piece, const std::function<void(const std::string&)>& emit);
    // Emits what was held back (at the end of generation).
    void flush(const std::function<void(const std::string&)>& emit);
    std::string& text() { return text_; }

 private:
    std::vector<std::string> stops_;
    size_t maxStop_ = 0;
    std::string text_;
    size_t emitted_ = 0;
};

struct SamplerDeleter {
    void operator()(common_sampler* s) const;
};

struct Sequence {
    enum class Phase { Prefill, Generate };

    Sequence(std::unique_ptr<GenerateJob> job, Prompt prompt);

    bool aborted() const { return job->abort && job->abort->load(); }
    const std::atomic<bool>* abortFlag() const { return job->abort.get(); }
    // The next prompt chunk to evaluate; prompt.chunks.size() once the prompt is done.
    bool prefillDone() const { return chunk >= prompt.chunks.size(); }
    // Moves the prompt cursor past `n` text tokens of the current chunk.
    void advanceText(size_t n);

    std::unique_ptr<GenerateJob> job;
    Prompt prompt;
    std::unique_ptr<MediaEncoder> encoder;
    std::unique_ptr<common_sampler, SamplerDeleter> sampler;
    TextOutput output;
    Phase phase = Phase::Prefill;
    size_t chunk = 0;     // prompt cursor: chunk ...
    size_t offset = 0;    // ... and token inside a text chunk
    int32_t nPast = 0;    // the next position
    int32_t nCells = 0;   // KV cells this sequence holds
    int32_t sampled = 0;  // tokens sampled so far
    int32_t lastToken = -1;
    bool forgetWhenDone = false;  // clearCaches() ran while this sequence was running
    GenerateResult result;
    double t0 = 0;
    double tPrompt = 0;
    double tGen = 0;
};

// A sampler for these settings. Throws CodedError.
common_sampler* makeSampler(const llama_model* model, const GenerateParams& params,
                            const std::vector<llama_logit_bias>& eogBias);

}  // namespace mmlm
