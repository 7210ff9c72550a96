#pragma once
// The projector: every mtmd_* call lives in media.cpp. It turns a prompt and its media into
// chunks (with the keys the image cache and prefix reuse compare), encodes media chunks
// (through the image cache) and decodes their embeddings into one sequence of the context.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine.h"

struct llama_context;
struct llama_model;
struct mtmd_context;
struct mtmd_input_chunks;
struct mtmd_batch;

namespace mmlm {

// What the engine reads of one chunk.
struct PromptChunk {
    bool media = false;
    std::vector<int32_t> tokens;  // text chunks: the token ids
    int32_t nTokens = 0;
    int32_t nPos = 0;
    bool nonCausal = false;  // media decoded with non-causal attention: needs nTokens <= n_ubatch
    // Media chunks with an id: "<content>#<tile>:<tokens>:<positions>" (see chunkKeys in media.cpp).
    std::string key;
};

// A tokenized prompt: mtmd's chunks, and the engine's view of them.
class Prompt {
 public:
    Prompt();
    ~Prompt();
    Prompt(Prompt&&) noexcept;
    Prompt& operator=(Prompt&&) noexcept;

    std::vector<PromptChunk> chunks;
    int32_t tokens = 0;
    int32_t positions = 0;
    int32_t textTokens = 0;
    int32_t mediaTokens = 0;
    int32_t mediaChunks = 0;

 private:
    friend class Projector;
    friend class MediaEncoder;
    struct Raw;
    std::unique_ptr<Raw> raw_;
};

struct ProjectorParams {
    std::string path;
    bool useGpu = true;
    int32_t threads = -1;
    int32_t flashAttention = -1;  // -1 auto, 0 off, 1 on
    bool warmup = true;
    int32_t imageMinTokens = -1;
    int32_t imageMaxTokens = -1;
    std::function<bool(float)> progress;  // false stops loading
};

class Projector {
 public:
    // Throws CodedError E_MODEL_LOAD (or E_ABORTED when progress returned false).
    Projector(const ProjectorParams& params, const llama_model* model, LogSink* sink);
    ~Projector();
    Projector(const Projector&) = delete;
    Projector& operator=(const Projector&) = delete;

    bool vision() const;
    bool audio() const;
    int32_t audioSampleRate() const;
    bool mrope() const;
    const std::string& marker() const { return marker_; }
    // Whether the vision encoder runs on a GPU (its output may differ from the CPU's).
    bool encodesOnGpu() const { return !cpuEncoder_; }
    // 2 when the projector merges consecutive mergeable frames into one chunk (Qwen-VL video).
    int32_t frameMerge() const { return frameMerge_; }
    // Tokens of the largest single media chunk that must be decoded in one micro-batch
    // (non-causal attention), for a square image of `side` pixels; 0 when attention is causal.
    int32_t nonCausalTokens(uint32_t side) const;

    // Thread-safe (reads the projector only).
    Prompt tokenize(const std::string& prompt, const std::vector<MediaItem>& items, bool addSpecial) const;

    // Decodes media chunk `i` of `prompt` from its embeddings into sequence `seq` from position
    // `pos`, in batches of `nBatch`. Returns llama_decode's status; on 0 sets *newPos.
    int32_t decode(llama_context* ctx, const Prompt& prompt, size_t i, const float* embd, int32_t pos, int32_t seq,
                   int32_t nBatch, int32_t* newPos) const;

    // While encoding, the vision encoder stops once *flag is set.
    void setEncodeAbort(const std::atomic<bool>* flag) const { encodeAbort_.store(flag); }

    mtmd_context* raw() const { return ctx_; }
    LogSink* sink() const { return sink_; }

 private:
    bool encodeAborted() const;

    LogSink* sink_;
    mtmd_context* ctx_ = nullptr;
    std::string marker_;
    int32_t frameMerge_ = 1;
    bool cpuEncoder_ = true;
    mutable std::atomic<const std::atomic<bool>*> encodeAbort_{nullptr};
    const std::function<bool(float)>* loadProgress_ = nullptr;
};

// The embeddings of a prompt's media chunks: from the image cache when it has them, otherwise
// from the projector. Chunks not in the cache are encoded in batches, as llama-mtmd-cli does (a
// chunk and the uncached media chunks right after it, as far as the projector allows), and stored
// in the cache under `keyPrefix` + key.
class MediaEncoder {
 public:
    MediaEncoder(const Projector& projector, const Prompt& prompt, ImageCache& cache, std::string keyPrefix,
                 size_t embeddingSize, const std::atomic<bool>* abort);
    ~MediaEncoder();

    // Looks up every media chunk from `first` on (each counts as one hit or miss).
    void lookUp(size_t first);
    // The embeddings of media chunk i, valid until the next call. Throws CodedError.
    const float* embeddings(size_t i);

    int32_t hits = 0;
    int32_t misses = 0;
    int32_t encodedChunks = 0;
    double encodeMs = 0;

 private:
    void encodeFrom(size_t i);

    const Projector& projector_;
    const Prompt& prompt_;
    ImageCache& cache_;
    std::string keyPrefix_;
    size_t embeddingSize_;
    const std::atomic<bool>* abort_;
    std::vector<ImageCache::Embeddings> cached_;
    std::unique_ptr<mtmd_batch, void (*)(mtmd_batch*)> batch_;
    std::vector<size_t> inBatch_;
};

}  // namespace mmlm
