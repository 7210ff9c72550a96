// Loading: the text model, the projector, then a context sized for both (see load()).
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine-state.h"
#include "gguf-check.h"
#include "gguf.h"
#include "mtmd.h"
#include "rpc.h"

namespace mmlm {

namespace {

struct GgufDeleter {
    void operator()(gguf_context* g) const { gguf_free(g); }
};

// Reads only the metadata of a GGUF file: its architecture, projector type and sizes.
struct GgufSummary {
    std::string architecture;
    std::string projector;
    uint32_t contextLength = 0;
    uint32_t imageSize = 0;
    std::string audioProjector;
    uint32_t audioWidth = 0;
    uint32_t stackFactor = 0;
};

bool readGguf(const std::string& path, GgufSummary& out) {
    gguf_init_params params{/*no_alloc*/ true, /*ctx*/ nullptr};
    std::unique_ptr<gguf_context, GgufDeleter> g(gguf_init_from_file(path.c_str(), params));
    if (!g) return false;
    auto str = [&](const char* key) -> std::string {
        int64_t id = gguf_find_key(g.get(), key);
        if (id < 0 || gguf_get_kv_type(g.get(), id) != GGUF_TYPE_STRING) return "";
        return gguf_get_val_str(g.get(), id);
    };
    auto u32 = [&](const std::string& key) -> uint32_t {
        const int64_t id = gguf_find_key(g.get(), key.c_str());
        return id >= 0 && gguf_get_kv_type(g.get(), id) == GGUF_TYPE_UINT32 ? gguf_get_val_u32(g.get(), id) : 0;
    };
    out.architecture = str("general.architecture");
    out.projector = str("clip.projector_type");
    if (out.projector.empty()) out.projector = str("clip.vision.projector_type");
    out.contextLength = u32(out.architecture + ".context_length");
    out.imageSize = u32("clip.vision.image_size");
    out.audioProjector = str("clip.audio.projector_type");
    if (out.audioProjector.empty()) out.audioProjector = out.projector;
    out.audioWidth = u32("clip.audio.embedding_length");
    out.stackFactor = u32("clip.audio.projector.stack_factor");
    return true;
}

// Whether the pinned Whisper path can stack this encoder's frames. build_stack (clip.cpp) pads
// with GGML_PAD, a bit mask that rounds up correctly only for powers of two, so for some widths
// it makes one row more than clip_n_output_tokens expects and clip_encode aborts the process
// ("expected output 187 tokens, got 188", a width of 64 with a stack factor of 8).
bool audioStackWorks(const GgufSummary& m) {
    const std::string& type = m.audioProjector;
    if (type != "ultravox" && type != "voxtral" && type != "meralion") return true;
    if (m.stackFactor <= 1 || m.audioWidth == 0) return true;
    const uint64_t frames = 3000;           // one 30 s window of mel frames
    const uint64_t positions = frames / 2;  // after the stride-2 convolution
    const uint64_t total = static_cast<uint64_t>(m.audioWidth) * positions;
    const uint64_t stride = static_cast<uint64_t>(m.audioWidth) * m.stackFactor;
    const uint64_t rows = ((total + stride - 1) & ~(stride - 1)) / stride;
    const uint64_t expected = ((frames + m.stackFactor - 1) / m.stackFactor) / 2;
    return rows == expected;
}

constexpr uint32_t kDefaultContextCap = 8192;

// common_init_from_params' warm-up: one decode of BOS/EOS, so compute buffers exist up front.
void warmUp(llama_context* ctx, const llama_vocab* vocab) {
    std::vector<llama_token> tokens;
    if (llama_vocab_bos(vocab) != LLAMA_TOKEN_NULL) tokens.push_back(llama_vocab_bos(vocab));
    if (llama_vocab_eos(vocab) != LLAMA_TOKEN_NULL) tokens.push_back(llama_vocab_eos(vocab));
    if (tokens.empty()) tokens.push_back(0);
    llama_decode(ctx, llama_batch_get_one(tokens.data(), static_cast<int32_t>(tokens.size())));
    llama_memory_clear(llama_get_memory(ctx), true);
    llama_synchronize(ctx);
    llama_perf_context_reset(ctx);
}

}  // namespace

ModelInfo Engine::load(const LoadParams& p, const Progress& progress, const std::atomic<bool>* abort) {
    ScopedLogSink logScope(sink_);
    const double t0 = nowMs();
    sink_->takeErrors();
    auto aborted = [abort] { return abort != nullptr && abort->load(); };

    GgufSummary textMeta, projMeta;
    if (!readGguf(p.model, textMeta)) {
        throw CodedError("E_MODEL_LOAD",
                         withDetail("model " + p.model + " is not a valid GGUF file", sink_->takeErrors()));
    }
    if (p.vocabOnly) return loadVocabOnly(p, textMeta.architecture, t0);
    if (!readGguf(p.mmproj, projMeta)) {
        throw CodedError("E_MODEL_LOAD",
                         withDetail("mmproj " + p.mmproj + " is not a valid GGUF file", sink_->takeErrors()));
    }
    if (textMeta.architecture == "clip") {
        throw CodedError("E_MODEL_LOAD",
                         "model " + p.model +
                             " is a multimodal projector (general.architecture = clip), not a text model. "
                             "Did you swap model and mmproj?");
    }
    if (projMeta.architecture != "clip") {
        throw CodedError("E_MODEL_LOAD", "mmproj " + p.mmproj +
                                             " is a text model (general.architecture = " + projMeta.architecture +
                                             "), not a multimodal projector. Did you swap model and mmproj?");
    }
    if (!audioStackWorks(projMeta)) {
        throw CodedError("E_MODEL_LOAD", "mmproj " + p.mmproj + ": its " + projMeta.audioProjector +
                                             " audio encoder (width " + std::to_string(projMeta.audioWidth) +
                                             ", stack factor " + std::to_string(projMeta.stackFactor) +
                                             ") would abort llama.cpp's Whisper path at the first audio clip "
                                             "(its frame stacking pads wrongly for this width); this build cannot "
                                             "run it");
    }
    checkModelFiles(p.model, p.mmproj, p.chatTemplate);
    if (!p.rpc.empty()) addRpcServers(p.rpc);

    // Progress is shared between the two files by size.
    auto sizeOf = [](const std::string& path) {
        std::error_code ec;
        const auto size = std::filesystem::file_size(path, ec);
        return ec ? 0.0 : static_cast<double>(size);
    };
    const double textBytes = sizeOf(p.model);
    const double projBytes = sizeOf(p.mmproj);
    const float textShare = textBytes + projBytes > 0 ? static_cast<float>(textBytes / (textBytes + projBytes)) : 0.5f;
    auto report = [&progress, &aborted](float value) {
        if (aborted()) return false;
        if (progress) progress(value);
        return true;
    };
    std::function<bool(float)> textProgress = [&report, textShare](float v) { return report(textShare * v); };

    common_params params;
    params.model.path = p.model;
    // Default context: the trained size, capped so a 128k-context model does not
    // reserve gigabytes of KV cache unasked.
    // Default context: the trained size, capped so a 128k-context model does not
    // reserve gigabytes of KV cache unasked. It is each slot's: every sequence has its own KV
    // stream of that size (llama.cpp's non-unified cache, as llama-server -np N), so its cells
    // stay in position order whatever the other slots do, and its output is the same alone or
    // batched (in a unified cache a sequence's new cells can land in holes before its old ones,
    // which changes the order of the attention sums).
    const int32_t perSlot = p.contextSize > 0
                                ? p.contextSize
                                : static_cast<int32_t>(std::min<uint32_t>(
                                      textMeta.contextLength > 0 ? textMeta.contextLength : 4096, kDefaultContextCap));
    params.n_parallel = std::max(1, p.parallel);
    params.kv_unified = false;
    params.n_ctx = perSlot * params.n_parallel;
    params.n_batch = p.batchSize;
    params.n_ubatch = std::min(p.batchSize, 512);
    params.n_gpu_layers = p.gpuLayers;
    params.flash_attn_type = p.flashAttention < 0    ? LLAMA_FLASH_ATTN_TYPE_AUTO
                             : p.flashAttention == 0 ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                                     : LLAMA_FLASH_ATTN_TYPE_ENABLED;
    params.cpuparams.n_threads = p.threads;
    params.cpuparams_batch.n_threads = p.threads;
    postprocess_cpu_params(params.cpuparams, nullptr);
    postprocess_cpu_params(params.cpuparams_batch, &params.cpuparams);
    params.warmup = p.warmup;
    params.fit_params = false;
    params.load_progress_callback = [](float value, void* user) -> bool {
        return (*static_cast<std::function<bool(float)>*>(user))(value);
    };
    params.load_progress_callback_user_data = &textProgress;

    // The model first, then the projector, then the context: the micro-batch must hold the
    // largest image of a projector that decodes with non-causal attention (Gemma 3), and only
    // the projector knows how many tokens that is.
    auto state = std::make_unique<State>();
    state->init = common_init_from_params(params, /*model_only*/ true);
    state->model = state->init->model();
    if (aborted()) throw CodedError("E_ABORTED", "model loading was aborted");
    if (state->model == nullptr) {
        throw CodedError("E_MODEL_LOAD",
                         withDetail("llama.cpp could not load the model " + p.model, sink_->takeErrors()));
    }
    state->vocab = llama_model_get_vocab(state->model);

    ProjectorParams pp;
    pp.path = p.mmproj;
    pp.useGpu = p.mmprojOnGpu;
    pp.threads = params.cpuparams.n_threads;
    pp.flashAttention = p.flashAttention;
    pp.warmup = p.warmup;
    pp.imageMinTokens = p.imageMinTokens;
    pp.imageMaxTokens = p.imageMaxTokens;
    pp.progress = [&report, textShare](float v) { return report(textShare + (1.0f - textShare) * v); };
    try {
        state->projector = std::make_unique<Projector>(pp, state->model, sink_);
    } catch (const CodedError& e) {
        if (aborted()) throw CodedError("E_ABORTED", "model loading was aborted");
        throw CodedError(e.code(), std::string(e.what()) + " for " + p.model);
    }
    if (aborted()) throw CodedError("E_ABORTED", "model loading was aborted");
    Projector& projector = *state->projector;
    if (!projector.vision() && !projector.audio()) {
        throw CodedError("E_MODEL_LOAD", "mmproj " + p.mmproj + " has neither a vision nor an audio encoder");
    }

    const int32_t imageTokens = projector.nonCausalTokens(projMeta.imageSize);
    if (imageTokens > params.n_ubatch) {
        params.n_ubatch = imageTokens;
        params.n_batch = std::max(params.n_batch, imageTokens);
    }
    llama_context_params cparams = common_context_params_to_llama(params);
    state->context.reset(llama_init_from_model(state->model, cparams));
    state->ctx = state->context.get();
    if (state->ctx == nullptr) {
        throw CodedError("E_MODEL_LOAD", withDetail("llama.cpp could not create a context for " + p.model +
                                                        " (contextSize " + std::to_string(params.n_ctx) + ")",
                                                    sink_->takeErrors()));
    }
    state->threadpools = std::make_unique<common_threadpools>();
    state->threadpools->init(state->ctx, params);
    if (p.warmup) warmUp(state->ctx, state->vocab);
    // llama.cpp caps the batch at the context asked for and rounds the context up: batch by what
    // it reports, and bound each sequence by what it really holds.
    state->batchSize = static_cast<int32_t>(llama_n_batch(state->ctx));
    state->ubatchSize = static_cast<int32_t>(llama_n_ubatch(state->ctx));
    state->contextSize = static_cast<int32_t>(llama_n_ctx_seq(state->ctx));

    try {
        state->templates = common_chat_templates_init(state->model, p.chatTemplate);
    } catch (const std::exception& e) {
        throw CodedError("E_MODEL_LOAD", std::string("the chat template could not be parsed: ") + e.what());
    }
    state->chat = std::make_unique<ChatLayer>(state->templates.get(), state->vocab);

    // llama_decode stops early only when every sequence in the batch has been aborted.
    llama_set_abort_callback(
        state->ctx,
        [](void* user) -> bool {
            auto* engine = static_cast<Engine*>(user);
            return engine->allAborted(engine->decodeFlags_);
        },
        this);

    const int32_t nVocab = llama_vocab_n_tokens(state->vocab);
    for (llama_token t = 0; t < nVocab; ++t) {
        if (llama_vocab_is_eog(state->vocab, t)) state->eogBias.push_back({t, -INFINITY});
    }

    ModelInfo info;
    info.contextSize = state->contextSize;
    info.trainContextSize = llama_model_n_ctx_train(state->model);
    info.embeddingSize = llama_model_n_embd_inp(state->model);
    info.vocabSize = nVocab;
    info.layers = llama_model_n_layer(state->model);
    info.architecture = textMeta.architecture;
    info.projector = projMeta.projector;
    char desc[256] = {0};
    llama_model_desc(state->model, desc, sizeof(desc));
    info.description = desc;
    info.marker = projector.marker();
    info.hasChatTemplate = !p.chatTemplate.empty() || llama_model_chat_template(state->model, nullptr) != nullptr;
    info.vision = projector.vision();
    info.audio = projector.audio();
    info.audioSampleRate = projector.audioSampleRate();
    info.mrope = projector.mrope();
    info.frameMerge = projector.frameMerge();
    info.parallel = params.n_parallel;
    info.batchSize = state->batchSize;
    info.ubatchSize = state->ubatchSize;

    state->reusePrefix = p.reusePrefix;
    state->embeddingSize = static_cast<size_t>(info.embeddingSize);
    state->batch = std::make_unique<BatchHolder>(state->batchSize);
    state->slots.resize(static_cast<size_t>(params.n_parallel));
    for (size_t i = 0; i < state->slots.size(); ++i) state->slots[i].id = static_cast<int32_t>(i);
    {
        std::error_code ec;
        const auto real = std::filesystem::weakly_canonical(p.mmproj, ec);
        const auto time = std::filesystem::last_write_time(p.mmproj, ec);
        const bool gpuEncoder = projector.encodesOnGpu();
        state->projectorId = (real.empty() ? p.mmproj : real.string()) + "|" +
                             std::to_string(static_cast<uint64_t>(projBytes)) + "|" +
                             std::to_string(time.time_since_epoch().count()) + "|" + std::to_string(p.imageMinTokens) +
                             "|" + std::to_string(p.imageMaxTokens) + "|" + (gpuEncoder ? "gpu" : "cpu");
    }
    imageCache_.reset(p.imageCacheBytes);
    state_ = std::move(state);
    if (progress) progress(1.0f);
    info.loadMs = nowMs() - t0;
    return info;
}

ModelInfo Engine::loadVocabOnly(const LoadParams& p, const std::string& architecture, double t0) {
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    auto state = std::make_unique<State>();
    state->vocabModel.reset(llama_model_load_from_file(p.model.c_str(), mp));
    state->model = state->vocabModel.get();
    if (state->model == nullptr) {
        throw CodedError("E_MODEL_LOAD",
                         withDetail("llama.cpp could not load the vocabulary of " + p.model, sink_->takeErrors()));
    }
    state->vocab = llama_model_get_vocab(state->model);
    try {
        state->templates = common_chat_templates_init(state->model, p.chatTemplate);
    } catch (const std::exception& e) {
        throw CodedError("E_MODEL_LOAD", std::string("the chat template could not be parsed: ") + e.what());
    }
    state->chat = std::make_unique<ChatLayer>(state->templates.get(), state->vocab);
    ModelInfo info;
    info.vocabSize = llama_vocab_n_tokens(state->vocab);
    info.architecture = architecture;
    info.marker = mtmd_default_marker();
    info.hasChatTemplate = !p.chatTemplate.empty() || llama_model_chat_template(state->model, nullptr) != nullptr;
    state_ = std::move(state);
    info.loadMs = nowMs() - t0;
    return info;
}

void Engine::unload() {
    failAll(CodedError("E_ABORTED", "the model was unloaded"));
    imageCache_.reset(0);
    state_.reset();
}

}  // namespace mmlm
