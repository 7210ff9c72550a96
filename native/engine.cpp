#include "engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include "chat.h"
#include "common.h"
#include "ggml-backend.h"
#include "gguf.h"
#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"
#include "sampling.h"

namespace mmlm {

namespace {

double nowMs() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

struct SamplerDeleter {
    void operator()(common_sampler* s) const { common_sampler_free(s); }
};
struct BatchHolder {
    llama_batch batch;
    explicit BatchHolder(int32_t n) : batch(llama_batch_init(n, 0, 1)) {}
    ~BatchHolder() { llama_batch_free(batch); }
};
struct MtmdBatchDeleter {
    void operator()(mtmd_batch* b) const { mtmd_batch_free(b); }
};
struct GgufDeleter {
    void operator()(gguf_context* g) const { gguf_free(g); }
};

// Reads only the metadata of a GGUF file: its architecture and projector type.
struct GgufSummary {
    std::string architecture;
    std::string projector;
    uint32_t contextLength = 0;
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
    out.architecture = str("general.architecture");
    out.projector = str("clip.projector_type");
    if (out.projector.empty()) out.projector = str("clip.vision.projector_type");
    const int64_t ctxKey = gguf_find_key(g.get(), (out.architecture + ".context_length").c_str());
    if (ctxKey >= 0 && gguf_get_kv_type(g.get(), ctxKey) == GGUF_TYPE_UINT32)
        out.contextLength = gguf_get_val_u32(g.get(), ctxKey);
    return true;
}

std::string withDetail(const std::string& message, const std::string& detail) {
    return detail.empty() ? message : message + " (" + detail + ")";
}

// Length of the longest suffix of `text` that is an incomplete but so-far valid UTF-8
// sequence. Holding those bytes back means every piece handed to JS decodes the same
// on its own as inside the whole text.
size_t incompleteUtf8Tail(const std::string& text) {
    const size_t n = text.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
        const auto c = static_cast<unsigned char>(text[n - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
        size_t need = 0;
        if (c >= 0xC2 && c <= 0xDF)
            need = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            need = 3;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 4;
        return need > back ? back : 0;
    }
    return 0;
}

// Length of the longest suffix of `text` that is a proper prefix of some stop string.
size_t partialStopTail(const std::string& text, const std::vector<std::string>& stops) {
    size_t best = 0;
    for (const std::string& stop : stops) {
        for (size_t len = std::min(stop.size() - 1, text.size()); len > best; --len) {
            if (text.compare(text.size() - len, len, stop, 0, len) == 0) {
                best = len;
                break;
            }
        }
    }
    return best;
}

constexpr uint32_t kDefaultContextCap = 8192;

bool hasGpuDevice() {
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        const auto type = ggml_backend_dev_type(ggml_backend_dev_get(i));
        if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) return true;
    }
    return false;
}

}  // namespace

// One cell range of the KV cache as the engine wrote it: a text token, or a whole media
// chunk (known by its key, see chunkKeys). Engine::State::kv lists them in position order.
struct KvEntry {
    bool media = false;
    llama_token token = LLAMA_TOKEN_NULL;
    std::string key;
    int32_t tokens = 1;
    llama_pos positions = 1;
};

struct Engine::State {
    common_init_result_ptr init;
    llama_model* model = nullptr;
    llama_context* ctx = nullptr;
    const llama_vocab* vocab = nullptr;
    mtmd::context_ptr mtmd;
    common_chat_templates_ptr templates;
    std::vector<llama_logit_bias> eogBias;
    int32_t batchSize = 2048;
    std::string marker;
    bool mergeFrames = false;  // the projector merges consecutive video frames in pairs
    bool reusePrefix = true;
    // Prefixes every image cache key: the projector file and the settings its output depends on.
    std::string projectorId;
    // What sequence 0 of the KV cache holds, as far as it is known to be intact. Cells past
    // its end may hold leftovers of a failed decode; the next request removes them.
    std::vector<KvEntry> kv;
    std::unique_ptr<BatchHolder> textBatch;
};

Engine::Engine(LogSink* sink) : sink_(sink) {}
Engine::~Engine() { unload(); }

bool Engine::loaded() const { return state_ != nullptr; }

bool Engine::aborted() const {
    const std::atomic<bool>* flag = abort_.load();
    return flag != nullptr && flag->load();
}

void Engine::throwIfAborted() const {
    if (aborted()) throw CodedError("E_ABORTED", "aborted");
}

namespace {
mtmd::input_chunks_ptr tokenizeItems(mtmd_context* mctx, const std::string& prompt, const std::string& marker,
                                     const std::vector<MediaItem>& items, bool addSpecial, bool mergeFrames,
                                     LogSink* sink);
}  // namespace

ModelInfo Engine::load(const LoadParams& p, const Progress& progress) {
    ScopedLogSink logScope(sink_);
    const double t0 = nowMs();
    sink_->takeErrors();

    GgufSummary textMeta, projMeta;
    if (!readGguf(p.model, textMeta)) {
        throw CodedError("E_MODEL_LOAD",
                         withDetail("model " + p.model + " is not a valid GGUF file", sink_->takeErrors()));
    }
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

    // Progress is shared between the two files by size.
    auto sizeOf = [](const std::string& path) {
        std::error_code ec;
        const auto size = std::filesystem::file_size(path, ec);
        return ec ? 0.0 : static_cast<double>(size);
    };
    const double textBytes = sizeOf(p.model);
    const double projBytes = sizeOf(p.mmproj);
    const float textShare = textBytes + projBytes > 0 ? static_cast<float>(textBytes / (textBytes + projBytes)) : 0.5f;
    struct ProgressState {
        const Engine* engine;
        const Progress* report;
        float offset;
        float scale;
    };
    auto onProgress = [](float value, void* user) -> bool {
        auto* s = static_cast<ProgressState*>(user);
        if (s->engine->aborted()) return false;
        if (*s->report) (*s->report)(s->offset + s->scale * value);
        return true;
    };
    ProgressState textProgress{this, &progress, 0.0f, textShare};
    ProgressState projProgress{this, &progress, textShare, 1.0f - textShare};

    common_params params;
    params.model.path = p.model;
    // Default context: the trained size, capped so a 128k-context model does not
    // reserve gigabytes of KV cache unasked.
    params.n_ctx = p.contextSize > 0
                       ? p.contextSize
                       : static_cast<int32_t>(std::min<uint32_t>(
                             textMeta.contextLength > 0 ? textMeta.contextLength : 4096, kDefaultContextCap));
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
    params.load_progress_callback = onProgress;
    params.load_progress_callback_user_data = &textProgress;

    auto state = std::make_unique<State>();
    state->init = common_init_from_params(params);
    state->model = state->init->model();
    state->ctx = state->init->context();
    if (aborted()) throw CodedError("E_ABORTED", "model loading was aborted");
    if (state->model == nullptr) {
        throw CodedError("E_MODEL_LOAD",
                         withDetail("llama.cpp could not load the model " + p.model, sink_->takeErrors()));
    }
    if (state->ctx == nullptr) {
        throw CodedError("E_MODEL_LOAD", withDetail("llama.cpp could not create a context for " + p.model +
                                                        " (contextSize " + std::to_string(p.contextSize) + ")",
                                                    sink_->takeErrors()));
    }
    state->vocab = llama_model_get_vocab(state->model);
    state->batchSize = params.n_batch;

    mtmd_context_params mp = mtmd_context_params_default();
    mp.use_gpu = p.mmprojOnGpu;
    mp.print_timings = false;
    mp.n_threads = params.cpuparams.n_threads;
    mp.flash_attn_type = params.flash_attn_type;
    mp.warmup = p.warmup;
    mp.image_min_tokens = p.imageMinTokens;
    mp.image_max_tokens = p.imageMaxTokens;
    mp.progress_callback = onProgress;
    mp.progress_callback_user_data = &projProgress;
    // The vision encoder is one ggml graph. Asking to see some nodes' outputs splits it
    // there, and returning false afterwards stops the rest once the request is aborted.
    // On the CPU it stops after any matmul or attention node (a big image's layer can take
    // seconds); on a GPU only between layers, so no fused kernels are split apart.
    cpuEncoder_ = !p.mmprojOnGpu || !hasGpuDevice();
    mp.cb_eval = [](struct ggml_tensor* t, bool ask, void* user) -> bool {
        auto* engine = static_cast<Engine*>(user);
        if (!ask) return !engine->aborted();
        if (std::strncmp(t->name, "layer_out-", 10) == 0) return true;
        return engine->cpuEncoder_ &&
               (t->op == GGML_OP_MUL_MAT || t->op == GGML_OP_FLASH_ATTN_EXT || t->op == GGML_OP_SOFT_MAX);
    };
    mp.cb_eval_user_data = this;
    state->mtmd.reset(mtmd_init_from_file(p.mmproj.c_str(), state->model, mp));
    if (aborted()) throw CodedError("E_ABORTED", "model loading was aborted");
    if (!state->mtmd) {
        throw CodedError("E_MODEL_LOAD", withDetail("mtmd could not load the projector " + p.mmproj + " for " + p.model,
                                                    sink_->takeErrors()));
    }
    if (!mtmd_support_vision(state->mtmd.get())) {
        throw CodedError("E_MODEL_LOAD",
                         "mmproj " + p.mmproj + " has no vision encoder (audio-only projectors are not supported yet)");
    }

    try {
        state->templates = common_chat_templates_init(state->model, p.chatTemplate);
    } catch (const std::exception& e) {
        throw CodedError("E_MODEL_LOAD", std::string("the chat template could not be parsed: ") + e.what());
    }

    llama_set_abort_callback(
        state->ctx, [](void* user) -> bool { return static_cast<Engine*>(user)->aborted(); }, this);

    const int32_t nVocab = llama_vocab_n_tokens(state->vocab);
    for (llama_token t = 0; t < nVocab; ++t) {
        if (llama_vocab_is_eog(state->vocab, t)) state->eogBias.push_back({t, -INFINITY});
    }
    state->marker = mtmd_default_marker();

    ModelInfo info;
    info.contextSize = static_cast<int32_t>(llama_n_ctx(state->ctx));
    info.trainContextSize = llama_model_n_ctx_train(state->model);
    info.embeddingSize = llama_model_n_embd_inp(state->model);
    info.vocabSize = nVocab;
    info.layers = llama_model_n_layer(state->model);
    info.architecture = textMeta.architecture;
    info.projector = projMeta.projector;
    char desc[256] = {0};
    llama_model_desc(state->model, desc, sizeof(desc));
    info.description = desc;
    info.marker = state->marker;
    info.hasChatTemplate = !p.chatTemplate.empty() || llama_model_chat_template(state->model, nullptr) != nullptr;
    info.vision = mtmd_support_vision(state->mtmd.get());
    info.audio = mtmd_support_audio(state->mtmd.get());
    info.mrope = mtmd_decode_use_mrope(state->mtmd.get());
    // Whether two mergeable frames become one chunk: tokenize two small placeholders. Only
    // M-RoPE projectors (Qwen-VL) merge frames, and only they need the probe: on tiling models
    // (SmolVLM upscales even a 64x64 image into 13 tiles) it would cost a hundred MB at load.
    if (info.vision && info.mrope) {
        MediaItem pair;
        for (int i = 0; i < 2; ++i) {
            Media frame;
            frame.width = frame.height = 64;
            frame.mergeable = true;
            pair.segments.push_back({false, "", frame});
        }
        mtmd::input_chunks_ptr chunks =
            tokenizeItems(state->mtmd.get(), state->marker, state->marker, {pair}, false, false, sink_);
        size_t mediaChunks = 0;
        for (size_t i = 0; i < mtmd_input_chunks_size(chunks.get()); ++i) {
            if (mtmd_input_chunk_get_type(mtmd_input_chunks_get(chunks.get(), i)) != MTMD_INPUT_CHUNK_TYPE_TEXT)
                ++mediaChunks;
        }
        info.frameMerge = mediaChunks == 1 ? 2 : 1;
    }
    state->mergeFrames = info.frameMerge > 1;
    state->reusePrefix = p.reusePrefix;
    state->textBatch = std::make_unique<BatchHolder>(state->batchSize);
    {
        std::error_code ec;
        const auto real = std::filesystem::weakly_canonical(p.mmproj, ec);
        const auto time = std::filesystem::last_write_time(p.mmproj, ec);
        state->projectorId =
            (real.empty() ? p.mmproj : real.string()) + "|" + std::to_string(static_cast<uint64_t>(projBytes)) + "|" +
            std::to_string(time.time_since_epoch().count()) + "|" + std::to_string(p.imageMinTokens) + "|" +
            std::to_string(p.imageMaxTokens) + "|" + (p.mmprojOnGpu && !cpuEncoder_ ? "gpu" : "cpu");
    }
    imageCache_.reset(p.imageCacheBytes);
    state_ = std::move(state);
    if (progress) progress(1.0f);
    info.loadMs = nowMs() - t0;
    return info;
}

void Engine::unload() {
    // Members are declared so that mtmd and templates go before the llama context and model.
    imageCache_.reset(0);
    if (!state_) return;
    state_->mtmd.reset();
    state_->templates.reset();
    state_.reset();
}

void Engine::clearCaches() {
    imageCache_.clear();
    if (!state_) return;
    state_->kv.clear();
    llama_memory_clear(llama_get_memory(state_->ctx), true);
}

EngineStats Engine::stats() const {
    EngineStats out;
    out.imageCache = imageCache_.stats();
    out.requests = requests_.load();
    out.reusedPositions = reusedPositions_.load();
    out.evaluatedPositions = evaluatedPositions_.load();
    return out;
}

std::string Engine::formatChat(const std::vector<ChatMessage>& messages, bool addGenerationPrompt) const {
    common_chat_templates_inputs inputs;
    inputs.use_jinja = true;
    inputs.add_generation_prompt = addGenerationPrompt;
    inputs.add_bos = llama_vocab_get_add_bos(state_->vocab);
    inputs.add_eos = llama_vocab_get_add_eos(state_->vocab);
    for (const ChatMessage& m : messages) {
        common_chat_msg msg;
        msg.role = m.role;
        if (m.parts.empty()) {
            msg.content = m.content;
        } else {
            for (const ChatPart& part : m.parts) {
                common_chat_msg_content_part cp;
                cp.type = part.media ? "media_marker" : "text";
                cp.text = part.media ? state_->marker : part.text;
                msg.content_parts.push_back(std::move(cp));
            }
        }
        inputs.messages.push_back(std::move(msg));
    }
    try {
        return common_chat_templates_apply(state_->templates.get(), inputs).prompt;
    } catch (const std::exception& e) {
        throw CodedError("E_INVALID_ARGUMENT", std::string("the chat template failed on these messages: ") + e.what());
    }
}

std::vector<int32_t> Engine::tokenize(const std::string& text, bool addSpecial, bool parseSpecial) const {
    std::vector<llama_token> tokens = common_tokenize(state_->vocab, text, addSpecial, parseSpecial);
    return std::vector<int32_t>(tokens.begin(), tokens.end());
}

std::string Engine::detokenize(const std::vector<int32_t>& tokens) const {
    std::string out;
    for (int32_t t : tokens) out += common_token_to_piece(state_->vocab, t, true);
    return out;
}

namespace {

size_t countMarkers(const std::string& prompt, const std::string& marker) {
    size_t n = 0;
    for (size_t pos = prompt.find(marker); pos != std::string::npos; pos = prompt.find(marker, pos + marker.size()))
        ++n;
    return n;
}

void checkMarkers(const std::string& prompt, const std::string& marker, size_t media) {
    const size_t markers = countMarkers(prompt, marker);
    if (markers != media) {
        throw CodedError("E_MEDIA_MISMATCH", "the prompt has " + std::to_string(markers) + " media marker" +
                                                 (markers == 1 ? "" : "s") + " (" + marker + ") but " +
                                                 std::to_string(media) + " media item" +
                                                 (media == 1 ? " was" : "s were") + " given");
    }
}

// The prompt split at its markers, each marker replaced by its item's segments, then
// mtmd_tokenize_from_parts. Text between markers is split and tokenized exactly as
// mtmd_tokenize does (empty pieces dropped, special tokens parsed); a video's text segments
// are separate parts, as mtmd does for the text its lazy video bitmaps return.
//
// Bitmap ids. mtmd gives every chunk of an image (each tile) its bitmap's id, and a merged
// pair of video frames the id of its first frame. So that a chunk's id names exactly the
// pixels it was made from, the first frame of a pair gets "first|second" (pairs are formed
// as mtmd_group_mergeable_bitmaps does: greedily, two adjacent mergeable bitmaps of one size),
// and every id gets "@n", its occurrence in this prompt, so the tiles of an image can be
// numbered even when the same image is given twice (chunkKeys). Media without an id get none.
mtmd::input_chunks_ptr tokenizeItems(mtmd_context* mctx, const std::string& prompt, const std::string& marker,
                                     const std::vector<MediaItem>& items, bool addSpecial, bool mergeFrames,
                                     LogSink* sink) {
    checkMarkers(prompt, marker, items.size());
    struct Piece {
        const std::string* text = nullptr;
        const Media* media = nullptr;
    };
    std::vector<std::string> texts;  // prompt pieces; reserved so pointers stay valid
    texts.reserve(items.size() + 1);
    std::vector<Piece> pieces;
    size_t start = 0;
    for (const MediaItem& item : items) {
        const size_t at = prompt.find(marker, start);
        if (at > start) {
            texts.push_back(prompt.substr(start, at - start));
            pieces.push_back({&texts.back(), nullptr});
        }
        for (const MediaSegment& seg : item.segments) {
            if (seg.isText) {
                if (!seg.text.empty()) pieces.push_back({&seg.text, nullptr});
            } else {
                pieces.push_back({nullptr, &seg.media});
            }
        }
        start = at + marker.size();
    }
    if (start < prompt.size()) {
        texts.push_back(prompt.substr(start));
        pieces.push_back({&texts.back(), nullptr});
    }

    std::vector<std::string> ids(pieces.size());
    std::unordered_map<std::string, int> occurrences;
    for (size_t k = 0; k < pieces.size(); ++k) {
        const Media* m = pieces[k].media;
        if (m == nullptr) continue;
        const size_t first = k;
        std::string content = m->id;
        const Media* next = k + 1 < pieces.size() ? pieces[k + 1].media : nullptr;
        if (mergeFrames && m->mergeable && next != nullptr && next->mergeable && next->width == m->width &&
            next->height == m->height) {
            content = m->id.empty() || next->id.empty() ? "" : m->id + "|" + next->id;
            ++k;  // the second frame of the pair: its id is never a chunk's
        }
        if (!content.empty()) ids[first] = content + "@" + std::to_string(occurrences[content]++);
    }

    mtmd::bitmaps bitmaps;
    std::vector<mtmd_input_text> inputTexts;
    inputTexts.reserve(pieces.size());
    std::vector<mtmd_input_part> parts;
    parts.reserve(pieces.size());
    for (size_t k = 0; k < pieces.size(); ++k) {
        const Piece& piece = pieces[k];
        if (piece.text) {
            inputTexts.push_back({piece.text->c_str(), piece.text->size(), addSpecial, /*parse_special*/ true});
            parts.push_back({&inputTexts.back(), nullptr});
            continue;
        }
        const Media& m = *piece.media;
        std::vector<unsigned char> zeros;
        if (m.rgb.empty()) zeros.assign(static_cast<size_t>(m.width) * m.height * 3, 0);
        mtmd_bitmap* b = mtmd_bitmap_init(m.width, m.height, m.rgb.empty() ? zeros.data() : m.rgb.data());
        if (!ids[k].empty()) mtmd_bitmap_set_id(b, ids[k].c_str());
        mtmd_bitmap_set_mergeable(b, m.mergeable);
        bitmaps.entries.emplace_back(b);
        parts.push_back({nullptr, b});
    }
    std::vector<const mtmd_input_part*> partPtrs;
    partPtrs.reserve(parts.size());
    for (const mtmd_input_part& part : parts) partPtrs.push_back(&part);

    mtmd::input_chunks_ptr chunks(mtmd_input_chunks_init());
    const int32_t res = mtmd_tokenize_from_parts(mctx, chunks.get(), partPtrs.data(), partPtrs.size(), addSpecial);
    if (res != 0) {
        throw CodedError("E_ENGINE",
                         withDetail("mtmd_tokenize failed with " + std::to_string(res), sink->takeErrors()));
    }
    return chunks;
}

MediaItem singleImage(const Media& media) {
    MediaItem item;
    item.segments.push_back({false, "", media});
    return item;
}

// For each chunk, the key of its embeddings: empty for text and for media without an id,
// otherwise "<content>#<tile>:<tokens>:<positions>". The content is the bitmap id without its
// "@n" (see tokenizeItems); tiles are numbered in the order mtmd emits them.
std::vector<std::string> chunkKeys(const mtmd_input_chunks* chunks) {
    const size_t n = mtmd_input_chunks_size(chunks);
    std::vector<std::string> keys(n);
    std::unordered_map<std::string, int> tiles;
    for (size_t i = 0; i < n; ++i) {
        const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks, i);
        if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) continue;
        const char* raw = mtmd_input_chunk_get_id(chunk);
        const std::string id = raw == nullptr ? "" : raw;
        if (id.empty()) continue;
        const int tile = tiles[id]++;
        keys[i] = id.substr(0, id.rfind('@')) + "#" + std::to_string(tile) + ":" +
                  std::to_string(mtmd_input_chunk_get_n_tokens(chunk)) + ":" +
                  std::to_string(mtmd_input_chunk_get_n_pos(chunk));
    }
    return keys;
}

// Where evaluation of a prompt starts: chunk `chunk`, token `offset` inside it (text chunks
// only), after `entries` KV entries covering `positions` positions and `tokens` tokens.
struct Resume {
    size_t chunk = 0;
    size_t offset = 0;
    size_t entries = 0;
    llama_pos positions = 0;
    int32_t tokens = 0;
};

// The longest prefix of the prompt already in the KV cache: text compared token by token,
// media chunk by chunk by key. At least one token is left to evaluate, since sampling needs
// the logits of the prompt's last position.
Resume matchPrefix(const std::vector<KvEntry>& kv, const mtmd_input_chunks* chunks,
                   const std::vector<std::string>& keys) {
    Resume r;
    const size_t n = mtmd_input_chunks_size(chunks);
    for (size_t i = 0; i < n; ++i) {
        const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks, i);
        r.chunk = i;
        r.offset = 0;
        if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t count = 0;
            const llama_token* tokens = mtmd_input_chunk_get_tokens_text(chunk, &count);
            for (; r.offset < count; ++r.offset) {
                if (r.entries >= kv.size() || kv[r.entries].media || kv[r.entries].token != tokens[r.offset]) return r;
                ++r.entries;
                ++r.positions;
                ++r.tokens;
            }
        } else {
            if (keys[i].empty() || r.entries >= kv.size() || !kv[r.entries].media || kv[r.entries].key != keys[i]) {
                return r;
            }
            r.positions += kv[r.entries].positions;
            r.tokens += kv[r.entries].tokens;
            ++r.entries;
        }
    }
    if (n == 0 || r.entries == 0) return Resume{};
    // The whole prompt is cached: evaluate its last token (or media chunk) again.
    const KvEntry& last = kv[--r.entries];
    r.chunk = n - 1;
    r.offset = last.media ? 0 : r.offset - 1;
    r.positions -= last.positions;
    r.tokens -= last.tokens;
    return r;
}

// The embeddings of a prompt's media chunks: from the image cache when it has them, otherwise
// from the projector. Chunks not in the cache are encoded in batches, as llama-mtmd-cli does
// (a chunk and the uncached media chunks right after it, as far as the projector allows), and
// stored in the cache.
class MediaEncoder {
 public:
    MediaEncoder(mtmd_context* mtmd, const mtmd_input_chunks* chunks, const std::vector<std::string>& keys,
                 ImageCache& cache, const std::string& projectorId, size_t embeddingSize, LogSink* sink,
                 std::function<void()> checkAbort)
        : mtmd_(mtmd),
          chunks_(chunks),
          keys_(keys),
          cache_(cache),
          projectorId_(projectorId),
          embeddingSize_(embeddingSize),
          sink_(sink),
          checkAbort_(std::move(checkAbort)),
          cached_(keys.size()) {}

    // Looks up every media chunk from `first` on (each counts as one hit or miss).
    void lookUp(size_t first) {
        if (!cache_.enabled()) return;
        for (size_t i = first; i < keys_.size(); ++i) {
            if (keys_[i].empty()) continue;
            cached_[i] = cache_.get(projectorId_ + "\n" + keys_[i]);
            ++(cached_[i] ? hits : misses);
        }
    }

    // The embeddings of media chunk i, valid until the next call.
    const float* embeddings(size_t i) {
        if (cached_[i]) return cached_[i]->data();
        const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks_, i);
        if (std::find(inBatch_.begin(), inBatch_.end(), i) == inBatch_.end()) encodeFrom(i);
        const float* embd = mtmd_batch_get_output_embd(batch_.get(), chunk);
        if (embd == nullptr) throw CodedError("E_ENGINE", "mtmd_batch_get_output_embd returned no embeddings");
        return embd;
    }

    int32_t hits = 0;
    int32_t misses = 0;
    int32_t encodedChunks = 0;
    double encodeMs = 0;

 private:
    void encodeFrom(size_t i) {
        batch_.reset(mtmd_batch_init(mtmd_));
        inBatch_.assign(1, i);
        if (mtmd_batch_add_chunk(batch_.get(), mtmd_input_chunks_get(chunks_, i)) != 0) {
            throw CodedError("E_ENGINE", withDetail("mtmd_batch_add_chunk failed", sink_->takeErrors()));
        }
        for (size_t j = i + 1; j < keys_.size() && !cached_[j]; ++j) {
            const mtmd_input_chunk* next = mtmd_input_chunks_get(chunks_, j);
            if (mtmd_input_chunk_get_type(next) == MTMD_INPUT_CHUNK_TYPE_TEXT) break;
            if (mtmd_batch_add_chunk(batch_.get(), next) != 0) break;
            inBatch_.push_back(j);
        }
        const double t = nowMs();
        const int32_t res = mtmd_batch_encode(batch_.get());
        encodeMs += nowMs() - t;
        checkAbort_();
        if (res != 0) {
            throw CodedError("E_ENGINE", withDetail("the vision encoder failed (mtmd_batch_encode returned " +
                                                        std::to_string(res) + ")",
                                                    sink_->takeErrors()));
        }
        encodedChunks += static_cast<int32_t>(inBatch_.size());
        if (!cache_.enabled()) return;
        for (size_t j : inBatch_) {
            const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks_, j);
            const float* out = mtmd_batch_get_output_embd(batch_.get(), chunk);
            if (out != nullptr && !keys_[j].empty()) {
                cache_.put(projectorId_ + "\n" + keys_[j], out, mtmd_input_chunk_get_n_tokens(chunk) * embeddingSize_);
            }
        }
    }

    mtmd_context* mtmd_;
    const mtmd_input_chunks* chunks_;
    const std::vector<std::string>& keys_;
    ImageCache& cache_;
    const std::string& projectorId_;
    size_t embeddingSize_;
    LogSink* sink_;
    std::function<void()> checkAbort_;
    std::vector<ImageCache::Embeddings> cached_;
    std::unique_ptr<mtmd_batch, MtmdBatchDeleter> batch_;
    std::vector<size_t> inBatch_;
};

}  // namespace

TokenCount Engine::countTokens(const std::string& prompt, const std::vector<MediaItem>& media, bool addSpecial) {
    ScopedLogSink logScope(sink_);
    mtmd::input_chunks_ptr chunks =
        tokenizeItems(state_->mtmd.get(), prompt, state_->marker, media, addSpecial, state_->mergeFrames, sink_);

    TokenCount out;
    out.tokens = static_cast<int32_t>(mtmd_helper_get_n_tokens(chunks.get()));
    out.positions = mtmd_helper_get_n_pos(chunks.get());
    const size_t n = mtmd_input_chunks_size(chunks.get());
    for (size_t i = 0; i < n; ++i) {
        const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks.get(), i);
        const auto tokens = static_cast<int32_t>(mtmd_input_chunk_get_n_tokens(chunk));
        if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            out.textTokens += tokens;
        } else {
            out.mediaTokens += tokens;
            out.mediaChunks++;
        }
    }
    return out;
}

GenerateResult Engine::generate(const GenerateParams& p, const Piece& onPiece) {
    ScopedLogSink logScope(sink_);
    sink_->takeErrors();
    const double t0 = nowMs();
    GenerateResult result;
    State& s = *state_;
    throwIfAborted();

    mtmd::input_chunks_ptr chunks =
        tokenizeItems(s.mtmd.get(), p.prompt, s.marker, p.media, p.addSpecial, s.mergeFrames, sink_);
    const std::vector<std::string> keys = chunkKeys(chunks.get());

    const int32_t nCtx = static_cast<int32_t>(llama_n_ctx(s.ctx));
    result.promptTokens = static_cast<int32_t>(mtmd_helper_get_n_tokens(chunks.get()));
    result.promptPositions = mtmd_helper_get_n_pos(chunks.get());
    if (result.promptTokens >= nCtx) {
        throw CodedError("E_CONTEXT_OVERFLOW",
                         "the prompt needs " + std::to_string(result.promptTokens) + " tokens but the context holds " +
                             std::to_string(nCtx) +
                             "; load with a larger contextSize, or send a shorter prompt or fewer or "
                             "smaller images (maxPixels)");
    }
    requests_++;

    // Keep what the KV cache already holds of this prompt (see matchPrefix), and remove the
    // rest. With sliding-window attention the cache may no longer hold the window the first
    // new position needs, and recurrent memory cannot drop a suffix: then start from empty,
    // as llama-server does.
    llama_memory_t mem = llama_get_memory(s.ctx);
    Resume from = s.reusePrefix ? matchPrefix(s.kv, chunks.get(), keys) : Resume{};
    if (from.positions > 0) {
        const llama_pos posMin = llama_memory_seq_pos_min(mem, 0);
        const llama_pos window = std::max(1, llama_model_n_swa(s.model));
        if (posMin < 0 || posMin > std::max(0, from.positions - window) ||
            !llama_memory_seq_rm(mem, 0, from.positions, -1)) {
            from = Resume{};
        }
    }
    if (from.positions == 0) {
        from = Resume{};
        llama_memory_clear(mem, true);
    }
    s.kv.resize(from.entries);
    result.reusedPositions = from.positions;
    result.reusedTokens = from.tokens;
    result.evaluatedPositions = result.promptPositions - from.positions;
    reusedPositions_ += static_cast<uint64_t>(result.reusedPositions);
    evaluatedPositions_ += static_cast<uint64_t>(result.evaluatedPositions);
    llama_pos nPast = from.positions;
    int32_t nCells = from.tokens;

    const size_t nChunks = mtmd_input_chunks_size(chunks.get());
    for (size_t i = 0; i < nChunks; ++i) {
        const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks.get(), i);
        if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) continue;
        result.mediaTokens += static_cast<int32_t>(mtmd_input_chunk_get_n_tokens(chunk));
        result.mediaChunks++;
    }

    // Evaluate chunk by chunk, as llama-mtmd-cli does: text in batches of batchSize, media
    // from their embeddings (the image cache's, or the projector's).
    const double tPrompt = nowMs();
    MediaEncoder encoder(s.mtmd.get(), chunks.get(), keys, imageCache_, s.projectorId,
                         static_cast<size_t>(llama_model_n_embd_inp(s.model)), sink_, [this] { throwIfAborted(); });
    encoder.lookUp(from.chunk);
    llama_batch& textBatch = s.textBatch->batch;
    for (size_t i = from.chunk; i < nChunks; ++i) {
        throwIfAborted();
        const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks.get(), i);
        if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t count = 0;
            const llama_token* tokens = mtmd_input_chunk_get_tokens_text(chunk, &count);
            size_t j = i == from.chunk ? from.offset : 0;
            while (j < count) {
                common_batch_clear(textBatch);
                const size_t begin = j;
                for (; j < count && textBatch.n_tokens < s.batchSize; ++j) {
                    common_batch_add(textBatch, tokens[j], nPast + static_cast<llama_pos>(j - begin), {0}, false);
                }
                if (i == nChunks - 1 && j == count) textBatch.logits[textBatch.n_tokens - 1] = true;
                const int32_t res = llama_decode(s.ctx, textBatch);
                throwIfAborted();
                if (res != 0) {
                    throw CodedError("E_ENGINE", withDetail("llama_decode failed on prompt chunk " + std::to_string(i),
                                                            sink_->takeErrors()));
                }
                for (size_t k = begin; k < j; ++k) s.kv.push_back(KvEntry{false, tokens[k], "", 1, 1});
                nPast += textBatch.n_tokens;
                nCells += textBatch.n_tokens;
            }
            continue;
        }
        const float* embd = encoder.embeddings(i);
        llama_pos newPast = nPast;
        const int32_t res = mtmd_helper_decode_image_chunk(s.mtmd.get(), s.ctx, chunk, const_cast<float*>(embd), nPast,
                                                           0, s.batchSize, &newPast, nullptr, nullptr);
        throwIfAborted();
        if (res != 0) {
            throw CodedError(
                "E_ENGINE", withDetail("llama_decode failed on media chunk " + std::to_string(i), sink_->takeErrors()));
        }
        const auto chunkTokens = static_cast<int32_t>(mtmd_input_chunk_get_n_tokens(chunk));
        s.kv.push_back(KvEntry{true, LLAMA_TOKEN_NULL, keys[i], chunkTokens, newPast - nPast});
        nPast = newPast;
        nCells += chunkTokens;
    }
    result.encodeMs = encoder.encodeMs;
    result.encodedChunks = encoder.encodedChunks;
    result.imageCacheHits = encoder.hits;
    result.imageCacheMisses = encoder.misses;
    result.promptMs = nowMs() - tPrompt;

    common_params_sampling sp;
    sp.temp = p.sampling.temperature;
    sp.top_k = p.sampling.topK;
    sp.top_p = p.sampling.topP;
    sp.min_p = p.sampling.minP;
    sp.penalty_repeat = p.sampling.repeatPenalty;
    sp.penalty_last_n = p.sampling.repeatLastN;
    sp.penalty_present = p.sampling.presencePenalty;
    sp.penalty_freq = p.sampling.frequencyPenalty;
    sp.seed = p.sampling.seed;
    sp.ignore_eos = p.ignoreEos;
    sp.logit_bias_eog = s.eogBias;
    if (p.ignoreEos) sp.logit_bias.insert(sp.logit_bias.end(), s.eogBias.begin(), s.eogBias.end());
    std::unique_ptr<common_sampler, SamplerDeleter> sampler(common_sampler_init(s.model, sp));
    if (!sampler) throw CodedError("E_ENGINE", "common_sampler_init failed");

    BatchHolder batch(1);
    std::string text;
    size_t emitted = 0;
    size_t maxStop = 0;
    for (const std::string& stop : p.stop) maxStop = std::max(maxStop, stop.size());
    const int32_t maxTokens = p.maxTokens < 0 ? INT32_MAX : p.maxTokens;
    const double tGen = nowMs();
    result.stopReason = "length";

    for (int32_t i = 0; i < maxTokens; ++i) {
        throwIfAborted();
        if (nCells >= nCtx) {
            result.stopReason = "context";
            break;
        }
        const llama_token token = common_sampler_sample(sampler.get(), s.ctx, -1);
        common_sampler_accept(sampler.get(), token, true);
        if (i == 0) result.timeToFirstTokenMs = nowMs() - t0;
        if (!p.ignoreEos && llama_vocab_is_eog(s.vocab, token)) {
            result.stopReason = "eos";
            break;
        }
        result.completionTokens++;
        text += common_token_to_piece(s.ctx, token, true);

        // Stop strings: search only where a new match can start.
        bool stopped = false;
        if (maxStop > 0) {
            const size_t from = emitted > maxStop ? emitted - maxStop : 0;
            size_t cut = std::string::npos;
            for (const std::string& stop : p.stop) {
                const size_t at = text.find(stop, from);
                if (at != std::string::npos && at < cut) cut = at;
            }
            if (cut != std::string::npos) {
                text.resize(std::max(cut, emitted));
                result.stopReason = "stop";
                stopped = true;
            }
        }
        if (stopped) break;
        const size_t hold = std::max(incompleteUtf8Tail(text), partialStopTail(text, p.stop));
        if (text.size() - hold > emitted) {
            if (onPiece) onPiece(text.substr(emitted, text.size() - hold - emitted));
            emitted = text.size() - hold;
        }
        if (i + 1 == maxTokens) break;  // the last token needs no decode

        common_batch_clear(batch.batch);
        common_batch_add(batch.batch, token, nPast++, {0}, true);
        const int32_t res = llama_decode(s.ctx, batch.batch);
        throwIfAborted();
        if (res != 0) {
            throw CodedError("E_ENGINE", withDetail("llama_decode failed on generated token " + std::to_string(i) +
                                                        " (returned " + std::to_string(res) + ")",
                                                    sink_->takeErrors()));
        }
        s.kv.push_back(KvEntry{false, token, "", 1, 1});
        nCells++;
    }
    if (text.size() > emitted && onPiece) onPiece(text.substr(emitted));
    result.generationMs = nowMs() - tGen;
    result.text = std::move(text);
    result.totalMs = nowMs() - t0;
    return result;
}

EmbedResult Engine::embedImage(const Media& media) {
    ScopedLogSink logScope(sink_);
    sink_->takeErrors();
    State& s = *state_;
    throwIfAborted();
    mtmd::input_chunks_ptr chunks =
        tokenizeItems(s.mtmd.get(), s.marker, s.marker, {singleImage(media)}, false, s.mergeFrames, sink_);
    const std::vector<std::string> keys = chunkKeys(chunks.get());

    EmbedResult out;
    out.embeddingSize = llama_model_n_embd_inp(s.model);
    MediaEncoder encoder(s.mtmd.get(), chunks.get(), keys, imageCache_, s.projectorId,
                         static_cast<size_t>(out.embeddingSize), sink_, [this] { throwIfAborted(); });
    encoder.lookUp(0);
    const size_t n = mtmd_input_chunks_size(chunks.get());
    for (size_t i = 0; i < n; ++i) {
        const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks.get(), i);
        if (mtmd_input_chunk_get_type(chunk) == MTMD_INPUT_CHUNK_TYPE_TEXT) continue;
        throwIfAborted();
        const float* embd = encoder.embeddings(i);
        const auto tokens = static_cast<int32_t>(mtmd_input_chunk_get_n_tokens(chunk));
        out.data.insert(out.data.end(), embd, embd + static_cast<size_t>(tokens) * out.embeddingSize);
        out.tokens += tokens;
        out.chunks++;
    }
    out.encodeMs = encoder.encodeMs;
    out.imageCacheHits = encoder.hits;
    return out;
}

}  // namespace mmlm
