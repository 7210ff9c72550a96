#pragma once
// The model and its engine thread: slots, a queue of requests, and the step loop that decodes
// every running sequence in one batch (continuous batching, after llama-server's update_slots).
// Plain C++ structs, no N-API. mtmd is called only from media.cpp.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "chat-layer.h"
#include "image-cache.h"
#include "log-routing.h"

namespace mmlm {

// An error with one of the JS error codes (E_MODEL_LOAD, E_ABORTED, ...).
class CodedError : public std::runtime_error {
 public:
    CodedError(std::string code, const std::string& message) : std::runtime_error(message), code_(std::move(code)) {}
    const std::string& code() const { return code_; }

 private:
    std::string code_;
};

// "message (detail)", or the message alone when there is no detail (llama.cpp's error lines).
inline std::string withDetail(const std::string& message, const std::string& detail) {
    return detail.empty() ? message : message + " (" + detail + ")";
}

// Milliseconds on the monotonic clock.
inline double nowMs() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

struct LoadParams {
    std::string model;
    std::string mmproj;
    std::string chatTemplate;  // empty: the model's own
    int32_t contextSize = 0;   // 0: the trained context, at most 8192
    int32_t threads = -1;      // -1: physical cores
    int32_t batchSize = 2048;
    int32_t gpuLayers = -1;  // -1: auto (all that fit), 0: none
    bool mmprojOnGpu = true;
    int32_t flashAttention = -1;  // -1 auto, 0 off, 1 on
    int32_t imageMinTokens = -1;
    int32_t imageMaxTokens = -1;
    bool warmup = true;
    uint64_t imageCacheBytes = 0;  // 0: no image embedding cache
    bool reusePrefix = true;       // keep the KV cache between requests and evaluate only what differs
    int32_t parallel = 1;          // slots: sequences decoded together, sharing one unified KV cache
    // Only the vocabulary and chat templates: tokenize, detokenize and the chat layer work, nothing
    // runs (no weights, projector or context). The parent side of an isolated engine uses it.
    bool vocabOnly = false;
    // RPC servers ("host:port") whose devices take layers like local GPUs (llama.cpp's --rpc).
    std::vector<std::string> rpc;
};

struct ModelInfo {
    int32_t contextSize = 0;
    int32_t trainContextSize = 0;
    int32_t embeddingSize = 0;
    int32_t vocabSize = 0;
    int32_t layers = 0;
    std::string architecture;
    std::string projector;
    std::string description;
    std::string marker;
    bool hasChatTemplate = false;
    bool vision = false;
    bool audio = false;
    int32_t audioSampleRate = 0;  // what the audio encoder takes, in Hz; 0 without audio
    bool mrope = false;
    int32_t frameMerge = 1;  // 2: consecutive mergeable frames share one chunk (Qwen-VL video)
    int32_t parallel = 1;
    int32_t batchSize = 0;   // llama_n_batch: what one decode takes
    int32_t ubatchSize = 0;  // llama_n_ubatch: raised for non-causal projectors to hold their largest image
    double loadMs = 0;
};

// Decoded RGB pixels, or an audio clip's mono float PCM at the projector's sample rate; Media
// never parses files. Empty rgb (pcm): a zero placeholder of that size (counting).
struct Media {
    std::vector<uint8_t> rgb;
    uint32_t width = 0;
    uint32_t height = 0;
    bool audio = false;
    std::vector<float> pcm;
    uint32_t samples = 0;  // the clip's length, also when pcm is empty
    std::string id;
    bool mergeable = false;  // a video frame that may share a temporal chunk with its neighbour
};

// What one media marker in the prompt stands for: one image, or a video's text and frames
// in order (a prefix, timestamps, the frames). Text segments are tokenized on their own,
// as mtmd does for the text a lazy (video) bitmap returns.
struct MediaSegment {
    bool isText = false;
    std::string text;
    Media media;
};
struct MediaItem {
    std::vector<MediaSegment> segments;
};

struct SamplingParams {
    float temperature = 0.8f;
    int32_t topK = 40;
    float topP = 0.95f;
    float minP = 0.05f;
    float repeatPenalty = 1.0f;
    int32_t repeatLastN = 64;
    float presencePenalty = 0.0f;
    float frequencyPenalty = 0.0f;
    uint32_t seed = 0xFFFFFFFF;  // LLAMA_DEFAULT_SEED: random
};

// A grammar on the output, from the chat template (a JSON schema or tools) or the user.
struct OutputConstraint {
    enum class Kind { None, User, Template } kind = Kind::None;
    std::string grammar;
    bool lazy = false;  // applies from the first trigger on (tool calls that text may precede)
    std::vector<GrammarTrigger> triggers;
    std::vector<std::string> preservedTokens;
    std::string generationPrompt;  // a template grammar starts with it: fed to the grammar first
};

struct TokenProb {
    int32_t token = 0;
    std::string piece;
    float logprob = 0;
};

// One generated token's log-probability and the most likely alternatives, from the raw logits
// (before sampling), as llama-server reports them.
struct TokenLogprobs {
    TokenProb sampled;
    std::vector<TokenProb> top;
};

struct GenerateParams {
    std::string prompt;  // with one media marker per MediaItem
    std::vector<MediaItem> media;
    bool addSpecial = true;  // BOS etc. as the vocab says
    SamplingParams sampling;
    int32_t maxTokens = -1;  // -1: until EOS or the context is full
    std::vector<std::string> stop;
    bool ignoreEos = false;
    OutputConstraint constraint;
    int32_t logprobs = -1;  // -1: none; else the alternatives per token (0..20)
    std::vector<std::pair<int32_t, float>> logitBias;
};

struct GenerateResult {
    std::string text;
    std::string stopReason;  // "eos", "stop", "length", "context"
    int32_t promptTokens = 0;
    int32_t promptPositions = 0;
    int32_t mediaTokens = 0;
    int32_t mediaChunks = 0;
    int32_t completionTokens = 0;
    double encodeMs = 0;
    double promptMs = 0;
    double generationMs = 0;
    double timeToFirstTokenMs = 0;
    double totalMs = 0;
    // The caches: prompt positions (and tokens) found in the KV cache, positions evaluated,
    // media chunks taken from the image cache or not found there, chunks run through the projector.
    int32_t reusedPositions = 0;
    int32_t reusedTokens = 0;
    int32_t evaluatedPositions = 0;
    int32_t imageCacheHits = 0;
    int32_t imageCacheMisses = 0;
    int32_t encodedChunks = 0;
    std::vector<TokenLogprobs> logprobs;
};

struct EmbedResult {
    std::vector<float> data;
    int32_t tokens = 0;
    int32_t embeddingSize = 0;
    int32_t chunks = 0;
    int32_t imageCacheHits = 0;
    double encodeMs = 0;
};

// Cumulative counters of one engine; readable from any thread.
struct EngineStats {
    ImageCacheStats imageCache;
    uint64_t requests = 0;
    uint32_t busySlots = 0;
    uint32_t queued = 0;
    uint64_t reusedPositions = 0;
    uint64_t evaluatedPositions = 0;
};

struct TokenCount {
    int32_t tokens = 0;
    int32_t positions = 0;
    int32_t textTokens = 0;
    int32_t mediaTokens = 0;
    int32_t mediaChunks = 0;
};

class Prompt;
struct Sequence;

// One generation request and where its output goes. The callbacks run on the engine thread;
// exactly one of onDone and onFail is called, last.
struct GenerateJob {
    GenerateParams params;
    std::shared_ptr<std::atomic<bool>> abort;
    std::function<void(const std::string&)> onPiece;
    std::function<void(const TokenLogprobs&)> onLogprobs;  // optional
    std::function<void(GenerateResult&&)> onDone;
    std::function<void(const CodedError&)> onFail;
};

class Engine {
 public:
    using Progress = std::function<void(float)>;

    explicit Engine(LogSink* sink);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // --- from any thread --------------------------------------------------------
    // Runs `task` on the engine thread between two steps, in the order posted.
    void post(std::function<void()> task);
    // Queues a generation; it runs in the first free slot, in order.
    void submit(std::unique_ptr<GenerateJob> job);
    // Wakes the engine thread so it sees a newly set abort flag of a queued request.
    void wake();
    // Runs what is queued, then ends the engine thread. Running sequences must have been aborted.
    void stopAndJoin();
    EngineStats stats() const;

    // --- on the engine thread, from a posted task ---------------------------------
    // `abort` is checked while loading (and while encoding, for embedImage).
    ModelInfo load(const LoadParams& params, const Progress& progress, const std::atomic<bool>* abort);
    EmbedResult embedImage(const Media& media, const std::atomic<bool>* abort);
    // Fails every running and queued request with E_ABORTED, then frees the model.
    void unload();
    // Empties the image cache and forgets what the idle slots hold (running ones forget when done).
    void clearCaches();

    // --- read-only once loaded; safe on any thread while the engine thread decodes ---
    // Media with empty rgb count as zero-filled images of their size; nothing is encoded.
    TokenCount countTokens(const std::string& prompt, const std::vector<MediaItem>& media, bool addSpecial) const;
    // The chat layer: templates with tools and schemas, output parsing, grammar checks.
    ChatLayer& chat() const;
    std::vector<int32_t> tokenize(const std::string& text, bool addSpecial, bool parseSpecial) const;
    std::string detokenize(const std::vector<int32_t>& tokens) const;
    bool loaded() const;

 private:
    struct State;
    struct Slot;
    ModelInfo loadVocabOnly(const LoadParams& params, const std::string& architecture, double t0);
    void run();
    bool hasWork() const;
    void step();
    void admit();
    void start(Slot& slot);
    Slot* pickSlot(const Prompt& prompt);
    bool stepMedia();
    void stepBatch();
    struct BatchEntry {
        Slot* slot;
        bool prompt;  // a prompt token (else a generated one)
        bool sample;  // its row of logits is sampled
    };
    bool decodeEntries(const std::vector<BatchEntry>& entries);
    void afterLogits(Slot& slot, int32_t index);
    void recordLogprobs(Sequence& q, int32_t index, int32_t token);
    void finish(Slot& slot, const std::string& stopReason);
    void fail(Slot& slot, const CodedError& error);
    void failAll(const CodedError& error);
    bool freeIdleSlots();
    void evictLargest();
    void forget(Slot& slot);
    bool allAborted(const std::vector<const std::atomic<bool>*>& flags) const;

    LogSink* sink_;
    ImageCache imageCache_;
    std::atomic<uint64_t> requests_{0};
    std::atomic<uint64_t> reusedPositions_{0};
    std::atomic<uint64_t> evaluatedPositions_{0};
    std::atomic<uint32_t> busySlots_{0};
    std::atomic<uint32_t> queued_{0};
    // The sequences in the llama_decode running now: it is aborted only when all of them are.
    std::vector<const std::atomic<bool>*> decodeFlags_;
    std::unique_ptr<State> state_;

    // The queue between other threads and the engine thread.
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> tasks_;
    std::deque<std::unique_ptr<GenerateJob>> incoming_;
    bool stopping_ = false;
    // Engine-thread only.
    std::deque<std::unique_ptr<GenerateJob>> pending_;
    std::thread thread_;  // last: starts after the members it uses exist
};

}  // namespace mmlm
