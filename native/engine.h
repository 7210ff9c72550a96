#pragma once
// The model and its decode loop: every llama.cpp, common and mtmd call lives here,
// behind plain C++ structs. No N-API. Everything except formatChat/tokenize runs on
// the engine's own thread (see worker.h), one request at a time.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

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
    bool mrope = false;
    int32_t frameMerge = 1;  // 2: consecutive mergeable frames share one chunk (Qwen-VL video)
    double loadMs = 0;
};

// Decoded RGB pixels; Media never parses files. Empty rgb: a placeholder of that size (counting).
struct Media {
    std::vector<uint8_t> rgb;
    uint32_t width = 0;
    uint32_t height = 0;
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

struct GenerateParams {
    std::string prompt;  // with one media marker per MediaItem
    std::vector<MediaItem> media;
    bool addSpecial = true;  // BOS etc. as the vocab says
    SamplingParams sampling;
    int32_t maxTokens = -1;  // -1: until EOS or the context is full
    std::vector<std::string> stop;
    bool ignoreEos = false;
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

struct ChatPart {
    bool media = false;  // a media marker; otherwise text
    std::string text;
};

struct ChatMessage {
    std::string role;
    std::string content;          // used when parts is empty
    std::vector<ChatPart> parts;  // OpenAI-style content parts
};

class Engine {
 public:
    using Progress = std::function<void(float)>;
    using Piece = std::function<void(const std::string&)>;

    explicit Engine(LogSink* sink);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // The abort flag checked between chunks, between tokens, inside llama_decode and
    // inside the vision encoder. Set for the duration of one request.
    void setAbortFlag(const std::atomic<bool>* flag) { abort_.store(flag); }

    ModelInfo load(const LoadParams& params, const Progress& progress);
    GenerateResult generate(const GenerateParams& params, const Piece& onPiece);
    EmbedResult embedImage(const Media& media);
    // Media with empty rgb count as zero-filled images of their size; nothing is encoded.
    TokenCount countTokens(const std::string& prompt, const std::vector<MediaItem>& media, bool addSpecial);
    void unload();
    // Empties the image cache and forgets the KV cache's contents (the next request starts fresh).
    void clearCaches();
    EngineStats stats() const;

    // Read-only; safe on the JS thread while the engine thread decodes.
    std::string formatChat(const std::vector<ChatMessage>& messages, bool addGenerationPrompt) const;
    std::vector<int32_t> tokenize(const std::string& text, bool addSpecial, bool parseSpecial) const;
    std::string detokenize(const std::vector<int32_t>& tokens) const;
    bool loaded() const;

    bool aborted() const;

 private:
    struct State;
    void throwIfAborted() const;

    LogSink* sink_;
    bool cpuEncoder_ = true;
    std::atomic<const std::atomic<bool>*> abort_{nullptr};
    ImageCache imageCache_;
    std::atomic<uint64_t> requests_{0};
    std::atomic<uint64_t> reusedPositions_{0};
    std::atomic<uint64_t> evaluatedPositions_{0};
    std::unique_ptr<State> state_;
};

}  // namespace mmlm
