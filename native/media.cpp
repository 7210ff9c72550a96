#include "media.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <unordered_map>

#include "ggml-backend.h"
#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"

namespace mmlm {

namespace {

bool hasGpuDevice() {
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        const auto type = ggml_backend_dev_type(ggml_backend_dev_get(i));
        if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) return true;
    }
    return false;
}

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
        if (mergeFrames && !m->audio && m->mergeable && next != nullptr && !next->audio && next->mergeable &&
            next->width == m->width && next->height == m->height) {
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
        mtmd_bitmap* b = nullptr;
        if (m.audio) {
            std::vector<float> silence;
            if (m.pcm.empty()) silence.assign(m.samples, 0.0f);
            const std::vector<float>& pcm = m.pcm.empty() ? silence : m.pcm;
            b = mtmd_bitmap_init_from_audio(pcm.size(), pcm.data());
        } else {
            std::vector<unsigned char> zeros;
            if (m.rgb.empty()) zeros.assign(static_cast<size_t>(m.width) * m.height * 3, 0);
            b = mtmd_bitmap_init(m.width, m.height, m.rgb.empty() ? zeros.data() : m.rgb.data());
        }
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

MediaItem singleImage(const Media& media) {
    MediaItem item;
    item.segments.push_back({false, "", media});
    return item;
}

}  // namespace

struct Prompt::Raw {
    mtmd::input_chunks_ptr chunks;
};

Prompt::Prompt() = default;
Prompt::~Prompt() = default;
Prompt::Prompt(Prompt&&) noexcept = default;
Prompt& Prompt::operator=(Prompt&&) noexcept = default;

Projector::Projector(const ProjectorParams& p, const llama_model* model, LogSink* sink) : sink_(sink) {
    mtmd_context_params mp = mtmd_context_params_default();
    mp.use_gpu = p.useGpu;
    mp.print_timings = false;
    mp.n_threads = p.threads;
    mp.flash_attn_type = p.flashAttention < 0    ? LLAMA_FLASH_ATTN_TYPE_AUTO
                         : p.flashAttention == 0 ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                                 : LLAMA_FLASH_ATTN_TYPE_ENABLED;
    mp.warmup = p.warmup;
    mp.image_min_tokens = p.imageMinTokens;
    mp.image_max_tokens = p.imageMaxTokens;
    loadProgress_ = &p.progress;
    mp.progress_callback = [](float value, void* user) -> bool {
        const auto* self = static_cast<const Projector*>(user);
        return !*self->loadProgress_ || (*self->loadProgress_)(value);
    };
    mp.progress_callback_user_data = this;
    // The vision encoder is one ggml graph. Asking to see some nodes' outputs splits it
    // there, and returning false afterwards stops the rest once the request is aborted.
    // On the CPU it stops after any matmul or attention node (a big image's layer can take
    // seconds); on a GPU only between layers, so no fused kernels are split apart.
    cpuEncoder_ = !p.useGpu || !hasGpuDevice();
    mp.cb_eval = [](struct ggml_tensor* t, bool ask, void* user) -> bool {
        auto* self = static_cast<Projector*>(user);
        if (!ask) return !self->encodeAborted();
        if (std::strncmp(t->name, "layer_out-", 10) == 0) return true;
        return self->cpuEncoder_ &&
               (t->op == GGML_OP_MUL_MAT || t->op == GGML_OP_FLASH_ATTN_EXT || t->op == GGML_OP_SOFT_MAX);
    };
    mp.cb_eval_user_data = this;
    ctx_ = mtmd_init_from_file(p.path.c_str(), model, mp);
    loadProgress_ = nullptr;
    if (ctx_ == nullptr) {
        throw CodedError("E_MODEL_LOAD",
                         withDetail("mtmd could not load the projector " + p.path, sink_->takeErrors()));
    }
    marker_ = mtmd_default_marker();
    // Whether two mergeable frames become one chunk: tokenize two small placeholders. Only
    // M-RoPE projectors (Qwen-VL) merge frames, and only they need the probe: on tiling models
    // (SmolVLM upscales even a 64x64 image into 13 tiles) it would cost a hundred MB at load.
    if (vision() && mrope()) {
        MediaItem pair;
        for (int i = 0; i < 2; ++i) {
            Media frame;
            frame.width = frame.height = 64;
            frame.mergeable = true;
            pair.segments.push_back({false, "", frame});
        }
        Prompt probe = tokenize(marker_, {pair}, false);
        frameMerge_ = probe.mediaChunks == 1 ? 2 : 1;
    }
}

Projector::~Projector() {
    if (ctx_ != nullptr) mtmd_free(ctx_);
}

bool Projector::vision() const { return mtmd_support_vision(ctx_); }
bool Projector::audio() const { return mtmd_support_audio(ctx_); }
int32_t Projector::audioSampleRate() const { return audio() ? mtmd_get_audio_sample_rate(ctx_) : 0; }
bool Projector::mrope() const { return mtmd_decode_use_mrope(ctx_); }

bool Projector::encodeAborted() const {
    const std::atomic<bool>* flag = encodeAbort_.load();
    return flag != nullptr && flag->load();
}

int32_t Projector::nonCausalTokens(uint32_t side) const {
    // Only projectors that decode images with non-causal attention need the probe (a tiling one
    // such as SmolVLM would make tens of MB of tiles for it).
    if (!vision() || side == 0 || !mtmd_decode_use_non_causal(ctx_, nullptr)) return 0;
    Media image;
    image.width = image.height = side;
    Prompt probe = tokenize(marker_, {singleImage(image)}, false);
    int32_t most = 0;
    for (const PromptChunk& c : probe.chunks) {
        if (c.media && c.nonCausal) most = std::max(most, c.nTokens);
    }
    return most;
}

Prompt Projector::tokenize(const std::string& prompt, const std::vector<MediaItem>& items, bool addSpecial) const {
    Prompt out;
    out.raw_ = std::make_unique<Prompt::Raw>();
    out.raw_->chunks = tokenizeItems(ctx_, prompt, marker_, items, addSpecial, frameMerge_ > 1, sink_);
    const mtmd_input_chunks* chunks = out.raw_->chunks.get();
    std::vector<std::string> keys = chunkKeys(chunks);
    const size_t n = mtmd_input_chunks_size(chunks);
    out.chunks.resize(n);
    for (size_t i = 0; i < n; ++i) {
        const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks, i);
        PromptChunk& c = out.chunks[i];
        c.media = mtmd_input_chunk_get_type(chunk) != MTMD_INPUT_CHUNK_TYPE_TEXT;
        c.nTokens = static_cast<int32_t>(mtmd_input_chunk_get_n_tokens(chunk));
        c.nPos = mtmd_input_chunk_get_n_pos(chunk);
        if (c.media) {
            c.key = std::move(keys[i]);
            c.nonCausal = mtmd_decode_use_non_causal(ctx_, chunk);
            out.mediaTokens += c.nTokens;
            out.mediaChunks++;
        } else {
            size_t count = 0;
            const llama_token* tokens = mtmd_input_chunk_get_tokens_text(chunk, &count);
            c.tokens.assign(tokens, tokens + count);
            out.textTokens += c.nTokens;
        }
        out.tokens += c.nTokens;
        out.positions += c.nPos;
    }
    return out;
}

int32_t Projector::decode(llama_context* ctx, const Prompt& prompt, size_t i, const float* embd, int32_t pos,
                          int32_t seq, int32_t nBatch, int32_t* newPos) const {
    const mtmd_input_chunk* chunk = mtmd_input_chunks_get(prompt.raw_->chunks.get(), i);
    llama_pos next = pos;
    const int32_t res = mtmd_helper_decode_image_chunk(ctx_, ctx, chunk, const_cast<float*>(embd), pos, seq, nBatch,
                                                       &next, nullptr, nullptr);
    if (res == 0) *newPos = next;
    return res;
}

MediaEncoder::MediaEncoder(const Projector& projector, const Prompt& prompt, ImageCache& cache, std::string keyPrefix,
                           size_t embeddingSize, const std::atomic<bool>* abort)
    : projector_(projector),
      prompt_(prompt),
      cache_(cache),
      keyPrefix_(std::move(keyPrefix)),
      embeddingSize_(embeddingSize),
      abort_(abort),
      cached_(prompt.chunks.size()),
      batch_(nullptr, mtmd_batch_free) {}

MediaEncoder::~MediaEncoder() = default;

void MediaEncoder::lookUp(size_t first) {
    if (!cache_.enabled()) return;
    for (size_t i = first; i < prompt_.chunks.size(); ++i) {
        const PromptChunk& c = prompt_.chunks[i];
        if (!c.media || c.key.empty()) continue;
        cached_[i] = cache_.get(keyPrefix_ + "\n" + c.key);
        ++(cached_[i] ? hits : misses);
    }
}

const float* MediaEncoder::embeddings(size_t i) {
    if (cached_[i]) return cached_[i]->data();
    const mtmd_input_chunk* chunk = mtmd_input_chunks_get(prompt_.raw_->chunks.get(), i);
    if (std::find(inBatch_.begin(), inBatch_.end(), i) == inBatch_.end()) encodeFrom(i);
    const float* embd = mtmd_batch_get_output_embd(batch_.get(), chunk);
    if (embd == nullptr) throw CodedError("E_ENGINE", "mtmd_batch_get_output_embd returned no embeddings");
    return embd;
}

void MediaEncoder::encodeFrom(size_t i) {
    const mtmd_input_chunks* chunks = prompt_.raw_->chunks.get();
    LogSink* sink = projector_.sink();
    batch_.reset(mtmd_batch_init(projector_.raw()));
    inBatch_.assign(1, i);
    if (mtmd_batch_add_chunk(batch_.get(), mtmd_input_chunks_get(chunks, i)) != 0) {
        throw CodedError("E_ENGINE", withDetail("mtmd_batch_add_chunk failed", sink->takeErrors()));
    }
    for (size_t j = i + 1; j < prompt_.chunks.size() && !cached_[j]; ++j) {
        if (!prompt_.chunks[j].media) break;
        if (mtmd_batch_add_chunk(batch_.get(), mtmd_input_chunks_get(chunks, j)) != 0) break;
        inBatch_.push_back(j);
    }
    const double t = nowMs();
    projector_.setEncodeAbort(abort_);
    const int32_t res = mtmd_batch_encode(batch_.get());
    projector_.setEncodeAbort(nullptr);
    encodeMs += nowMs() - t;
    if (abort_ != nullptr && abort_->load()) {
        inBatch_.clear();
        throw CodedError("E_ABORTED", "aborted");
    }
    if (res != 0) {
        inBatch_.clear();
        throw CodedError(
            "E_ENGINE", withDetail("the vision encoder failed (mtmd_batch_encode returned " + std::to_string(res) + ")",
                                   sink->takeErrors()));
    }
    encodedChunks += static_cast<int32_t>(inBatch_.size());
    if (!cache_.enabled()) return;
    for (size_t j : inBatch_) {
        const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks, j);
        const float* out = mtmd_batch_get_output_embd(batch_.get(), chunk);
        const std::string& key = prompt_.chunks[j].key;
        if (out != nullptr && !key.empty()) {
            cache_.put(keyPrefix_ + "\n" + key, out, mtmd_input_chunk_get_n_tokens(chunk) * embeddingSize_);
        }
    }
}

}  // namespace mmlm
