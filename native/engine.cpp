// The engine thread and its step loop, after llama-server's update_slots: take new work
// without blocking, admit queued requests into free slots, evaluate at most one media chunk,
// then decode one batch with a token for every generating sequence and prompt tokens up to
// the batch size, and sample each sequence from its own row of logits.
#include <algorithm>
#include <climits>
#include <cmath>

#include "engine-state.h"
#include "sampling.h"

namespace mmlm {

Engine::Engine(LogSink* sink) : sink_(sink), thread_([this] { run(); }) {}

Engine::~Engine() {
    stopAndJoin();
    unload();
}

bool Engine::loaded() const { return state_ != nullptr; }

void Engine::post(std::function<void()> task) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
}

void Engine::submit(std::unique_ptr<GenerateJob> job) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        incoming_.push_back(std::move(job));
        queued_++;
    }
    cv_.notify_one();
}

void Engine::wake() {
    std::lock_guard<std::mutex> lock(mutex_);
    cv_.notify_one();
}

void Engine::stopAndJoin() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

EngineStats Engine::stats() const {
    EngineStats out;
    out.imageCache = imageCache_.stats();
    out.requests = requests_.load();
    out.busySlots = busySlots_.load();
    out.queued = queued_.load();
    out.reusedPositions = reusedPositions_.load();
    out.evaluatedPositions = evaluatedPositions_.load();
    return out;
}

bool Engine::allAborted(const std::vector<const std::atomic<bool>*>& flags) const {
    if (flags.empty()) return false;
    for (const std::atomic<bool>* flag : flags) {
        if (flag == nullptr || !flag->load()) return false;
    }
    return true;
}

bool Engine::hasWork() const {
    if (!pending_.empty()) return true;
    return busySlots_.load() > 0;
}

void Engine::run() {
    ScopedLogSink logScope(sink_);
    for (;;) {
        std::deque<std::function<void()>> tasks;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            cv_.wait(lock, [this] { return stopping_ || !tasks_.empty() || !incoming_.empty() || hasWork(); });
            tasks.swap(tasks_);
            while (!incoming_.empty()) {
                pending_.push_back(std::move(incoming_.front()));
                incoming_.pop_front();
            }
            if (stopping_ && tasks.empty() && !hasWork()) return;
        }
        for (auto& task : tasks) task();
        if (hasWork()) step();
    }
}

void Engine::failAll(const CodedError& error) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        while (!incoming_.empty()) {
            pending_.push_back(std::move(incoming_.front()));
            incoming_.pop_front();
        }
    }
    while (!pending_.empty()) {
        std::unique_ptr<GenerateJob> job = std::move(pending_.front());
        pending_.pop_front();
        queued_--;
        job->onFail(error);
    }
    if (!state_) return;
    for (Slot& slot : state_->slots) {
        if (slot.seq) fail(slot, error);
    }
}

void Engine::step() {
    if (!state_) {
        failAll(CodedError("E_NOT_LOADED", "the model is not loaded"));
        return;
    }
    // Aborted requests leave first: the queued ones, then the running ones.
    for (auto it = pending_.begin(); it != pending_.end();) {
        if ((*it)->abort && (*it)->abort->load()) {
            std::unique_ptr<GenerateJob> job = std::move(*it);
            it = pending_.erase(it);
            queued_--;
            job->onFail(CodedError("E_ABORTED", "aborted"));
        } else {
            ++it;
        }
    }
    for (Slot& slot : state_->slots) {
        if (slot.seq && slot.seq->aborted()) fail(slot, CodedError("E_ABORTED", "aborted"));
    }
    admit();
    stepMedia();
    stepBatch();
}

// --- admission ------------------------------------------------------------------

void Engine::admit() {
    State& s = *state_;
    while (!pending_.empty()) {
        const bool free = std::any_of(s.slots.begin(), s.slots.end(), [](const Slot& slot) { return !slot.seq; });
        if (!free) return;
        std::unique_ptr<GenerateJob> job = std::move(pending_.front());
        pending_.pop_front();
        queued_--;
        const double t0 = nowMs();
        sink_->takeErrors();
        try {
            const GenerateParams& p = job->params;
            Prompt prompt = s.projector->tokenize(p.prompt, p.media, p.addSpecial);
            if (prompt.tokens >= s.contextSize) {
                throw CodedError("E_CONTEXT_OVERFLOW",
                                 "the prompt needs " + std::to_string(prompt.tokens) +
                                     " tokens but the context holds " + std::to_string(s.contextSize) +
                                     "; load with a larger contextSize, or send a shorter prompt, fewer or "
                                     "smaller images (maxPixels), or shorter audio clips (each 30 s is one window)");
            }
            if (!prompt.chunks.empty() && prompt.chunks.back().media) {
                throw CodedError("E_INVALID_ARGUMENT",
                                 "the prompt ends with an image; put some text after it (a chat template does)");
            }
            for (const PromptChunk& c : prompt.chunks) {
                if (c.media && c.nonCausal && c.nTokens > s.ubatchSize) {
                    throw CodedError("E_IMAGE_TOO_LARGE",
                                     "an image of this prompt is " + std::to_string(c.nTokens) +
                                         " tokens, but this projector must decode an image in one micro-batch of " +
                                         std::to_string(s.ubatchSize) +
                                         " tokens; send a smaller image or load with a smaller imageMaxTokens");
                }
            }
            std::unique_ptr<common_sampler, SamplerDeleter> sampler(makeSampler(s.model, p, s.eogBias));
            Slot* slot = pickSlot(prompt);
            auto seq = std::make_unique<Sequence>(std::move(job), std::move(prompt));
            seq->sampler = std::move(sampler);
            seq->t0 = t0;
            slot->seq = std::move(seq);
            slot->lastUsed = ++s.clock;
            busySlots_++;
            try {
                start(*slot);
            } catch (const std::exception& e) {
                fail(*slot, CodedError("E_ENGINE", std::string("Unknown error in the native engine: ") + e.what()));
            }
        } catch (const CodedError& e) {
            if (job) job->onFail(e);
        } catch (const std::exception& e) {
            if (job)
                job->onFail(CodedError("E_ENGINE", std::string("Unknown error in the native engine: ") + e.what()));
        }
    }
}

// Which free slot a prompt goes to. A slot whose record the prompt continues or repeats (they
// agree up to the end of the shorter one) loses nothing: the one that saves the most wins. Else
// the slot sharing the longest prefix, if that prefix holds an image (a new question about the
// same image), all of the slot's last prompt (the same chat, whose last reply came back otherwise
// than it was generated: reasoning left out, or tokenized differently) or half of this prompt;
// else an empty slot, so that no conversation's cached prefix is thrown away for a chat
// template's preamble while there is room; else the longest prefix anyway, least recently used
// among equals, as llama-server does.
Engine::Slot* Engine::pickSlot(const Prompt& prompt) {
    State& s = *state_;
    Slot* continued = nullptr;
    Slot* empty = nullptr;
    Slot* shared = nullptr;
    int32_t continuedCommon = -1;
    int32_t sharedCommon = -1;
    bool sharedMedia = false;
    for (Slot& slot : s.slots) {
        if (slot.seq) continue;
        if (slot.kv.empty()) {
            if (empty == nullptr || slot.lastUsed < empty->lastUsed) empty = &slot;
            continue;
        }
        const Resume match = s.reusePrefix ? matchPrefix(slot.kv, prompt) : Resume{};
        const int32_t common = match.common;
        int32_t recorded = 0;
        for (const KvEntry& entry : slot.kv) recorded += entry.positions;
        if (common > 0 && common == std::min(recorded, prompt.positions)) {
            if (common > continuedCommon) {
                continued = &slot;
                continuedCommon = common;
            }
        } else if (common > sharedCommon || (common == sharedCommon && slot.lastUsed < shared->lastUsed)) {
            shared = &slot;
            sharedCommon = common;
            sharedMedia = match.commonMedia;
        }
    }
    if (continued != nullptr) return continued;
    if (shared != nullptr && (empty == nullptr || sharedMedia || sharedCommon >= shared->promptPositions ||
                              2 * sharedCommon >= prompt.positions)) {
        return shared;
    }
    return empty;
}

// Keeps what the slot's sequence already holds of this prompt and removes the rest. With
// sliding-window attention the cache may no longer hold the window the first new position
// needs, and recurrent memory cannot drop a suffix: then start from empty, as llama-server does.
void Engine::start(Slot& slot) {
    State& s = *state_;
    Sequence& q = *slot.seq;
    llama_memory_t mem = llama_get_memory(s.ctx);
    Resume from = s.reusePrefix ? matchPrefix(slot.kv, q.prompt) : Resume{};
    if (from.positions > 0) {
        const llama_pos posMin = llama_memory_seq_pos_min(mem, slot.id);
        const llama_pos window = std::max(1, llama_model_n_swa(s.model));
        if (posMin < 0 || posMin > std::max(0, from.positions - window) ||
            !llama_memory_seq_rm(mem, slot.id, from.positions, -1)) {
            from = Resume{};
        }
    }
    if (from.positions == 0) {
        from = Resume{};
        llama_memory_seq_rm(mem, slot.id, -1, -1);
    }
    slot.kv.resize(from.entries);
    slot.promptPositions = q.prompt.positions;

    GenerateResult& r = q.result;
    r.promptTokens = q.prompt.tokens;
    r.promptPositions = q.prompt.positions;
    r.mediaTokens = q.prompt.mediaTokens;
    r.mediaChunks = q.prompt.mediaChunks;
    r.reusedPositions = from.positions;
    r.reusedTokens = from.tokens;
    r.evaluatedPositions = q.prompt.positions - from.positions;
    requests_++;
    reusedPositions_ += static_cast<uint64_t>(r.reusedPositions);
    evaluatedPositions_ += static_cast<uint64_t>(r.evaluatedPositions);

    q.chunk = from.chunk;
    q.offset = from.offset;
    q.nPast = from.positions;
    q.nCells = from.tokens;
    q.encoder = std::make_unique<MediaEncoder>(*s.projector, q.prompt, imageCache_, s.projectorId, s.embeddingSize,
                                               q.abortFlag());
    q.encoder->lookUp(from.chunk);
    q.tPrompt = nowMs();
}

// --- one step -------------------------------------------------------------------

// Evaluates the next media chunk of one prefilling sequence (round robin over the slots).
bool Engine::stepMedia() {
    State& s = *state_;
    const size_t n = s.slots.size();
    for (size_t k = 0; k < n; ++k) {
        const size_t index = (s.nextMediaSlot + k) % n;
        Slot& slot = s.slots[index];
        Sequence* q = slot.seq.get();
        if (q == nullptr || q->phase != Sequence::Phase::Prefill || q->prefillDone() ||
            !q->prompt.chunks[q->chunk].media) {
            continue;
        }
        s.nextMediaSlot = (index + 1) % n;
        const PromptChunk& c = q->prompt.chunks[q->chunk];
        const float* embd = nullptr;
        try {
            embd = q->encoder->embeddings(q->chunk);
        } catch (const CodedError& e) {
            fail(slot, e);
            return true;
        }
        llama_memory_t mem = llama_get_memory(s.ctx);
        int32_t newPos = q->nPast;
        decodeFlags_.assign(1, q->abortFlag());
        int32_t res = s.projector->decode(s.ctx, q->prompt, q->chunk, embd, q->nPast, slot.id, s.batchSize, &newPos);
        if (res == 1 && freeIdleSlots()) {
            llama_memory_seq_rm(mem, slot.id, q->nPast, -1);
            res = s.projector->decode(s.ctx, q->prompt, q->chunk, embd, q->nPast, slot.id, s.batchSize, &newPos);
        }
        decodeFlags_.clear();
        if (res != 0) {
            llama_memory_seq_rm(mem, slot.id, q->nPast, -1);  // what a part of the chunk left
            if (res == 2 || q->aborted()) {
                fail(slot, CodedError("E_ABORTED", "aborted"));
            } else if (res == 1) {
                evictLargest();
            } else {
                fail(slot,
                     CodedError("E_ENGINE", "llama_decode failed on media chunk " + std::to_string(q->chunk) +
                                                " (returned " + std::to_string(res) + "): " + sink_->takeErrors()));
            }
            return true;
        }
        slot.kv.push_back(KvEntry{true, -1, c.key, c.nTokens, newPos - q->nPast});
        q->nPast = newPos;
        q->nCells += c.nTokens;
        ++q->chunk;
        q->offset = 0;
        return true;
    }
    return false;
}

// One decode with a token for every generating sequence, then the prompts: each prefilling
// sequence's next piece of text (up to the batch size) in a decode of its own, round robin,
// while the step's prompt budget (the batch size) lasts. A prompt is cut into the same pieces as
// when it runs alone, and never shares a micro-batch with another sequence, so its numbers, and
// so its output, do not depend on what else runs.
void Engine::stepBatch() {
    State& s = *state_;
    llama_batch& batch = s.batch->batch;
    common_batch_clear(batch);
    std::vector<BatchEntry> entries;
    for (Slot& slot : s.slots) {
        Sequence* q = slot.seq.get();
        if (q == nullptr || q->phase != Sequence::Phase::Generate) continue;
        common_batch_add(batch, q->lastToken, q->nPast, {slot.id}, true);
        entries.push_back({&slot, false, true});
    }
    if (!decodeEntries(entries)) return;

    const size_t n = s.slots.size();
    int32_t budget = s.batchSize;
    for (size_t k = 0; k < n && budget > 0; ++k) {
        const size_t index = (s.nextPrefillSlot + k) % n;
        Slot& slot = s.slots[index];
        Sequence* q = slot.seq.get();
        if (q == nullptr || q->phase != Sequence::Phase::Prefill || q->prefillDone()) continue;
        const PromptChunk& c = q->prompt.chunks[q->chunk];
        if (c.media) continue;
        const size_t take = std::min(static_cast<size_t>(s.batchSize), c.tokens.size() - q->offset);
        if (budget<s.batchSize&& static_cast<int32_t>(take)> budget) break;  // the next step takes it whole
        const bool lastChunk = q->chunk + 1 == q->prompt.chunks.size();
        common_batch_clear(batch);
        entries.clear();
        for (size_t t = 0; t < take; ++t) {
            const bool last = lastChunk && q->offset + t + 1 == c.tokens.size();
            common_batch_add(batch, c.tokens[q->offset + t], q->nPast + static_cast<llama_pos>(t), {slot.id}, last);
            entries.push_back({&slot, true, last});
        }
        budget -= static_cast<int32_t>(take);
        s.nextPrefillSlot = (index + 1) % n;
        if (!decodeEntries(entries)) return;
    }
}

// Decodes the batch (one entry per token), in smaller views when the KV cache has no room, and
// commits each view: the tokens go into their slots' records and the rows with logits are sampled.
// False when the step should end here.
bool Engine::decodeEntries(const std::vector<BatchEntry>& entries) {
    State& s = *state_;
    llama_batch& batch = s.batch->batch;
    llama_memory_t mem = llama_get_memory(s.ctx);
    int32_t nBatch = s.batchSize;
    for (int32_t off = 0; off < batch.n_tokens;) {
        const int32_t n = std::min(nBatch, batch.n_tokens - off);
        llama_batch view = {n,
                            batch.token + off,
                            nullptr,
                            batch.pos + off,
                            batch.n_seq_id + off,
                            batch.seq_id + off,
                            batch.logits + off};
        decodeFlags_.clear();
        for (int32_t k = off; k < off + n; ++k) decodeFlags_.push_back(entries[k].slot->seq->abortFlag());
        const int32_t res = llama_decode(s.ctx, view);
        decodeFlags_.clear();
        if (res == 0) {
            for (int32_t k = off; k < off + n; ++k) {
                Slot& slot = *entries[k].slot;
                Sequence* q = slot.seq.get();
                if (q == nullptr) continue;
                slot.kv.push_back(KvEntry{false, batch.token[k], "", 1, 1});
                q->nPast++;
                q->nCells++;
                if (entries[k].prompt) q->advanceText(1);
                if (entries[k].sample) afterLogits(slot, k - off);
            }
            off += n;
            continue;
        }
        if (res == 1) {
            // No room in the KV cache: drop what idle slots keep, then try smaller batches, and
            // at one token give up the largest sequence.
            if (freeIdleSlots()) continue;
            if (nBatch > 1) {
                nBatch /= 2;
                continue;
            }
            evictLargest();
            return false;
        }
        if (res == 2) return false;  // every sequence in the view was aborted: the next step retires them
        const std::string detail = sink_->takeErrors();
        for (int32_t k = off; k < off + n; ++k) {
            Slot& slot = *entries[k].slot;
            if (!slot.seq) continue;
            llama_memory_seq_rm(mem, slot.id, slot.seq->nPast, -1);
            fail(slot, CodedError("E_ENGINE", "llama_decode failed (returned " + std::to_string(res) + ")" +
                                                  (detail.empty() ? "" : ": " + detail)));
        }
        return false;
    }
    return true;
}

void Engine::afterLogits(Slot& slot, int32_t index) {
    State& s = *state_;
    Sequence& q = *slot.seq;
    GenerateResult& r = q.result;
    const GenerateParams& p = q.job->params;
    if (q.aborted()) {
        fail(slot, CodedError("E_ABORTED", "aborted"));
        return;
    }
    if (q.phase == Sequence::Phase::Prefill) {
        q.phase = Sequence::Phase::Generate;
        q.tGen = nowMs();
        r.promptMs = q.tGen - q.tPrompt;
    }
    const int32_t maxTokens = p.maxTokens < 0 ? INT32_MAX : p.maxTokens;
    if (q.sampled >= maxTokens) {
        finish(slot, "length");
        return;
    }
    if (q.nCells >= s.contextSize) {
        finish(slot, "context");
        return;
    }
    llama_token token = 0;
    try {
        token = common_sampler_sample(q.sampler.get(), s.ctx, index);
        common_sampler_accept(q.sampler.get(), token, true);
    } catch (const std::exception& e) {
        // A grammar that admits no token here (e.g. a user grammar that cannot end).
        fail(slot, CodedError("E_INVALID_GRAMMAR", std::string("sampling under the grammar failed: ") + e.what()));
        return;
    }
    if (q.sampled++ == 0) r.timeToFirstTokenMs = nowMs() - q.t0;
    if (!p.ignoreEos && llama_vocab_is_eog(s.vocab, token)) {
        finish(slot, "eos");
        return;
    }
    r.completionTokens++;
    if (p.logprobs >= 0) recordLogprobs(q, index, token);
    if (q.output.append(common_token_to_piece(s.ctx, token, true), q.job->onPiece)) {
        finish(slot, "stop");
        return;
    }
    if (q.sampled == maxTokens) {
        finish(slot, "length");  // the last token needs no decode
        return;
    }
    q.lastToken = token;
}

// The sampled token's log-probability and the top alternatives, from the raw logits (a softmax
// over the whole vocabulary), as llama-server's n_probs reports them.
void Engine::recordLogprobs(Sequence& q, int32_t index, int32_t token) {
    State& s = *state_;
    const float* logits = llama_get_logits_ith(s.ctx, index);
    const int32_t n = llama_vocab_n_tokens(s.vocab);
    if (logits == nullptr || n <= 0) return;
    float maxLogit = logits[0];
    for (int32_t i = 1; i < n; ++i) maxLogit = std::max(maxLogit, logits[i]);
    double sum = 0;
    for (int32_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i] - maxLogit));
    const double logSum = std::log(sum) + maxLogit;
    auto entry = [&](int32_t id) {
        return TokenProb{id, common_token_to_piece(s.ctx, id, true),
                         static_cast<float>(static_cast<double>(logits[id]) - logSum)};
    };
    TokenLogprobs out;
    out.sampled = entry(token);
    const int32_t k = std::min(q.job->params.logprobs, n);
    if (k > 0) {
        std::vector<int32_t> ids(n);
        for (int32_t i = 0; i < n; ++i) ids[i] = i;
        std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                          [logits](int32_t a, int32_t b) { return logits[a] > logits[b]; });
        for (int32_t i = 0; i < k; ++i) out.top.push_back(entry(ids[i]));
    }
    if (q.job->onLogprobs) q.job->onLogprobs(out);
    q.result.logprobs.push_back(std::move(out));
}

// --- retiring sequences ---------------------------------------------------------

void Engine::finish(Slot& slot, const std::string& stopReason) {
    Sequence& q = *slot.seq;
    GenerateResult r = std::move(q.result);
    const double now = nowMs();
    if (q.phase == Sequence::Phase::Prefill) {
        r.promptMs = now - q.tPrompt;
        q.tGen = now;
    }
    q.output.flush(q.job->onPiece);
    r.stopReason = stopReason;
    r.encodeMs = q.encoder->encodeMs;
    r.encodedChunks = q.encoder->encodedChunks;
    r.imageCacheHits = q.encoder->hits;
    r.imageCacheMisses = q.encoder->misses;
    r.generationMs = now - q.tGen;
    r.text = std::move(q.output.text());
    r.totalMs = now - q.t0;
    std::unique_ptr<GenerateJob> job = std::move(q.job);
    if (q.forgetWhenDone) forget(slot);
    slot.seq.reset();
    slot.lastUsed = ++state_->clock;
    busySlots_--;
    job->onDone(std::move(r));
}

void Engine::fail(Slot& slot, const CodedError& error) {
    std::unique_ptr<GenerateJob> job = std::move(slot.seq->job);
    if (slot.seq->forgetWhenDone) forget(slot);
    slot.seq.reset();
    slot.lastUsed = ++state_->clock;
    busySlots_--;
    job->onFail(error);
}

void Engine::forget(Slot& slot) {
    llama_memory_seq_rm(llama_get_memory(state_->ctx), slot.id, -1, -1);
    slot.kv.clear();
}

// Empties the sequences of idle slots (their cached prefixes, or leftovers of a failed decode).
bool Engine::freeIdleSlots() {
    llama_memory_t mem = llama_get_memory(state_->ctx);
    bool freed = false;
    for (Slot& slot : state_->slots) {
        if (slot.seq || llama_memory_seq_pos_max(mem, slot.id) < 0) continue;
        forget(slot);
        freed = true;
    }
    return freed;
}

// The KV cache cannot hold what the running sequences need: the one holding the most cells
// stops (a generating one with stop reason "context", a prefilling one with an error) and
// gives its cells to the others.
void Engine::evictLargest() {
    Slot* largest = nullptr;
    for (Slot& slot : state_->slots) {
        if (slot.seq && (largest == nullptr || slot.seq->nCells > largest->seq->nCells)) largest = &slot;
    }
    if (largest == nullptr) return;
    largest->seq->forgetWhenDone = true;
    if (largest->seq->phase == Sequence::Phase::Generate) {
        finish(*largest, "context");
    } else {
        fail(*largest,
             CodedError("E_CONTEXT_OVERFLOW",
                        "the context (" + std::to_string(state_->contextSize) + " tokens, shared by " +
                            std::to_string(busySlots_.load()) +
                            " running requests) is full; load with a larger contextSize or fewer parallel slots, "
                            "or send shorter prompts"));
    }
}

// --- other work -----------------------------------------------------------------

void Engine::clearCaches() {
    imageCache_.clear();
    if (!state_) return;
    for (Slot& slot : state_->slots) {
        if (slot.seq) {
            slot.seq->forgetWhenDone = true;
        } else {
            forget(slot);
        }
    }
}

EmbedResult Engine::embedImage(const Media& media, const std::atomic<bool>* abort) {
    sink_->takeErrors();
    State& s = *state_;
    if (abort != nullptr && abort->load()) throw CodedError("E_ABORTED", "aborted");
    MediaItem item;
    item.segments.push_back({false, "", media});
    const Prompt prompt = s.projector->tokenize(s.projector->marker(), {item}, false);

    EmbedResult out;
    out.embeddingSize = static_cast<int32_t>(s.embeddingSize);
    MediaEncoder encoder(*s.projector, prompt, imageCache_, s.projectorId, s.embeddingSize, abort);
    encoder.lookUp(0);
    for (size_t i = 0; i < prompt.chunks.size(); ++i) {
        const PromptChunk& c = prompt.chunks[i];
        if (!c.media) continue;
        if (abort != nullptr && abort->load()) throw CodedError("E_ABORTED", "aborted");
        const float* embd = encoder.embeddings(i);
        out.data.insert(out.data.end(), embd, embd + static_cast<size_t>(c.nTokens) * s.embeddingSize);
        out.tokens += c.nTokens;
        out.chunks++;
    }
    out.encodeMs = encoder.encodeMs;
    out.imageCacheHits = encoder.hits;
    return out;
}

TokenCount Engine::countTokens(const std::string& prompt, const std::vector<MediaItem>& media, bool addSpecial) const {
    ScopedLogSink logScope(sink_);
    const Prompt p = state_->projector->tokenize(prompt, media, addSpecial);
    TokenCount out;
    out.tokens = p.tokens;
    out.positions = p.positions;
    out.textTokens = p.textTokens;
    out.mediaTokens = p.mediaTokens;
    out.mediaChunks = p.mediaChunks;
    return out;
}

ChatLayer& Engine::chat() const { return *state_->chat; }

std::vector<int32_t> Engine::tokenize(const std::string& text, bool addSpecial, bool parseSpecial) const {
    std::vector<llama_token> tokens = common_tokenize(state_->vocab, text, addSpecial, parseSpecial);
    return std::vector<int32_t>(tokens.begin(), tokens.end());
}

std::string Engine::detokenize(const std::vector<int32_t>& tokens) const {
    std::string out;
    for (int32_t t : tokens) out += common_token_to_piece(state_->vocab, t, true);
    return out;
}

}  // namespace mmlm
