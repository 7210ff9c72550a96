#pragma once
// What a loaded engine holds, shared by engine-load.cpp (which builds it) and engine.cpp
// (which runs the slots). Engine-thread only, except the read-only parts named below.
#include <memory>
#include <string>
#include <vector>

#include "chat.h"
#include "common.h"
#include "engine.h"
#include "llama-cpp.h"
#include "media.h"
#include "prefix.h"
#include "sequence.h"

namespace mmlm {

struct BatchHolder {
    llama_batch batch;
    explicit BatchHolder(int32_t n) : batch(llama_batch_init(n, 0, 1)) {}
    ~BatchHolder() { llama_batch_free(batch); }
    BatchHolder(const BatchHolder&) = delete;
    BatchHolder& operator=(const BatchHolder&) = delete;
};

struct Engine::Slot {
    int32_t id = 0;  // its KV sequence id
    // What the sequence holds, as far as it is known to be intact. Cells past its end may hold
    // leftovers of a failed or aborted decode; the next request in this slot removes them.
    std::vector<KvEntry> kv;
    std::unique_ptr<Sequence> seq;  // the request running here, or none
    int32_t promptPositions = 0;    // the positions of the last prompt started here
    uint64_t lastUsed = 0;
};

struct Engine::State {
    // Declared so that they are freed in reverse: slots and the projector before the context,
    // the context before the model (held by init).
    common_init_result_ptr init;
    llama_model_ptr vocabModel;  // a vocabulary-only load (LoadParams::vocabOnly) instead of init
    llama_model* model = nullptr;
    // ggml's thread pool for the context, as common_init_from_params attaches one (the reference
    // CLI's): without it every graph compute starts and joins its own threads. Freed after the
    // context.
    std::unique_ptr<common_threadpools> threadpools;
    llama_context_ptr context;
    llama_context* ctx = nullptr;
    const llama_vocab* vocab = nullptr;
    std::unique_ptr<Projector> projector;  // read-only after load: tokenize on any thread
    common_chat_templates_ptr templates;   // read-only after load
    std::unique_ptr<ChatLayer> chat;       // on the templates; used from the JS thread
    std::vector<llama_logit_bias> eogBias;
    int32_t batchSize = 2048;  // llama_n_batch
    int32_t ubatchSize = 512;  // llama_n_ubatch
    int32_t contextSize = 0;   // cells one sequence may use (llama_n_ctx_seq)
    bool reusePrefix = true;
    size_t embeddingSize = 0;
    // Prefixes every image cache key: the projector file and the settings its output depends on.
    std::string projectorId;
    std::vector<Slot> slots;
    uint64_t clock = 0;          // for least-recently-used slot choice
    size_t nextMediaSlot = 0;    // round robin over the slots for the one media chunk per step
    size_t nextPrefillSlot = 0;  // ... and for the prompt pieces
    std::unique_ptr<BatchHolder> batch;
};

}  // namespace mmlm
