#include "model-wrap.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "engine.h"
#include "log-routing.h"
#include "worker.h"

namespace mmlm {

namespace {

// --- reading the (already validated) option objects ---------------------------

int32_t getInt(const Napi::Object& o, const char* key, int32_t fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : fallback;
}
uint32_t getUint(const Napi::Object& o, const char* key, uint32_t fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? static_cast<uint32_t>(v.As<Napi::Number>().Int64Value()) : fallback;
}
float getFloat(const Napi::Object& o, const char* key, float fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().FloatValue() : fallback;
}
bool getBool(const Napi::Object& o, const char* key, bool fallback) {
    Napi::Value v = o.Get(key);
    return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : fallback;
}
std::string getString(const Napi::Object& o, const char* key, const std::string& fallback = "") {
    Napi::Value v = o.Get(key);
    return v.IsString() ? v.As<Napi::String>().Utf8Value() : fallback;
}

// A JS Error carrying one of the MultimodalLMErrorCode values; src/ maps it to its class.
Napi::Error codedError(Napi::Env env, const std::string& code, const std::string& message) {
    Napi::Error error = Napi::Error::New(env, message);
    error.Set("code", Napi::String::New(env, code));
    return error;
}

Media readMedia(const Napi::Object& o) {
    Media m;
    m.width = getUint(o, "width", 0);
    m.height = getUint(o, "height", 0);
    m.id = getString(o, "id");
    m.mergeable = getBool(o, "mergeable", false);
    Napi::Value pcm = o.Get("pcm");
    Napi::Value samples = o.Get("samples");
    if (pcm.IsTypedArray() || samples.IsNumber()) {
        m.audio = true;
        if (pcm.IsTypedArray()) {
            Napi::Float32Array a = pcm.As<Napi::Float32Array>();
            m.pcm.assign(a.Data(), a.Data() + a.ElementLength());
        }
        m.samples = m.pcm.empty() ? getUint(o, "samples", 0) : static_cast<uint32_t>(m.pcm.size());
        return m;
    }
    Napi::Value data = o.Get("data");
    if (data.IsTypedArray()) {
        Napi::Uint8Array bytes = data.As<Napi::Uint8Array>();
        m.rgb.assign(bytes.Data(), bytes.Data() + bytes.ByteLength());
    }
    return m;
}

// An image ({data, width, height, id} or, for counting, {width, height}), or a video:
// {segments: [string | frame, ...]}.
MediaItem readMediaItem(const Napi::Object& o) {
    MediaItem item;
    Napi::Value segments = o.Get("segments");
    if (!segments.IsArray()) {
        item.segments.push_back({false, "", readMedia(o)});
        return item;
    }
    Napi::Array a = segments.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
        Napi::Value v = a.Get(i);
        if (v.IsString()) {
            item.segments.push_back({true, v.As<Napi::String>().Utf8Value(), Media{}});
        } else {
            item.segments.push_back({false, "", readMedia(v.As<Napi::Object>())});
        }
    }
    return item;
}

std::vector<MediaItem> readMediaItems(const Napi::Value& value) {
    std::vector<MediaItem> items;
    Napi::Array a = value.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) items.push_back(readMediaItem(a.Get(i).As<Napi::Object>()));
    return items;
}

std::vector<std::string> readStrings(const Napi::Value& value) {
    std::vector<std::string> out;
    if (!value.IsArray()) return out;
    Napi::Array a = value.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(a.Get(i).As<Napi::String>().Utf8Value());
    return out;
}

// {kind: "user" | "template", grammar, lazy, triggers: [{type, value}], preservedTokens, generationPrompt}
OutputConstraint readConstraint(const Napi::Value& value) {
    OutputConstraint c;
    if (!value.IsObject()) return c;
    Napi::Object o = value.As<Napi::Object>();
    const std::string kind = getString(o, "kind");
    c.kind = kind == "user"       ? OutputConstraint::Kind::User
             : kind == "template" ? OutputConstraint::Kind::Template
                                  : OutputConstraint::Kind::None;
    c.grammar = getString(o, "grammar");
    c.lazy = getBool(o, "lazy", false);
    Napi::Value triggers = o.Get("triggers");
    if (triggers.IsArray()) {
        Napi::Array a = triggers.As<Napi::Array>();
        for (uint32_t i = 0; i < a.Length(); ++i) {
            Napi::Object t = a.Get(i).As<Napi::Object>();
            c.triggers.push_back({getInt(t, "type", 1), getString(t, "value")});
        }
    }
    c.preservedTokens = readStrings(o.Get("preservedTokens"));
    c.generationPrompt = getString(o, "generationPrompt");
    return c;
}

Napi::Object tokenProbObject(Napi::Env env, const TokenProb& p) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("token", p.token);
    o.Set("bytes", Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(p.piece.data()), p.piece.size()));
    o.Set("logprob", p.logprob);
    return o;
}

Napi::Object logprobsObject(Napi::Env env, const TokenLogprobs& l) {
    Napi::Object o = tokenProbObject(env, l.sampled);
    Napi::Array top = Napi::Array::New(env, l.top.size());
    for (size_t i = 0; i < l.top.size(); ++i) top.Set(static_cast<uint32_t>(i), tokenProbObject(env, l.top[i]));
    o.Set("top", top);
    return o;
}

// --- events from the engine thread to JS --------------------------------------

struct Event {
    enum class Kind { Progress, Piece, Logprobs, Done, Fail } kind;
    float progress = 0;
    std::string text;
    std::function<Napi::Value(Napi::Env)> value;
    std::string code;
};

class NativeModel;

struct OpContext {
    Napi::Promise::Deferred deferred;
    Napi::ObjectReference self;
    NativeModel* model;
    uint32_t id;
};

void callJs(Napi::Env env, Napi::Function callback, OpContext* ctx, Event* event);
using OpFunction = Napi::TypedThreadSafeFunction<OpContext, Event, callJs>;

// Lets a job report progress or pieces while it runs.
class Emitter {
 public:
    explicit Emitter(OpFunction fn) : fn_(fn) {}
    void progress(float value) const { send(new Event{Event::Kind::Progress, value, {}, {}, {}}); }
    void piece(const std::string& text) const { send(new Event{Event::Kind::Piece, 0, text, {}, {}}); }
    void send(Event* event) const {
        if (fn_.NonBlockingCall(event) != napi_ok) delete event;  // the environment is shutting down
    }

 private:
    OpFunction fn_;
};

struct LogLine {
    int level;
    std::string text;
};

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "NativeModel",
                           {
                               InstanceMethod<&NativeModel::load>("load"),
                               InstanceMethod<&NativeModel::generate>("generate"),
                               InstanceMethod<&NativeModel::embedImage>("embedImage"),
                               InstanceMethod<&NativeModel::countTokens>("countTokens"),
                               InstanceMethod<&NativeModel::clearCaches>("clearCaches"),
                               InstanceMethod<&NativeModel::stats>("stats"),
                               InstanceMethod<&NativeModel::cancel>("cancel"),
                               InstanceMethod<&NativeModel::applyChat>("applyChat"),
                               InstanceMethod<&NativeModel::parseChat>("parseChat"),
                               InstanceMethod<&NativeModel::schemaToGrammar>("schemaToGrammar"),
                               InstanceMethod<&NativeModel::checkGrammar>("checkGrammar"),
                               InstanceMethod<&NativeModel::tokenize>("tokenize"),
                               InstanceMethod<&NativeModel::detokenize>("detokenize"),
                               InstanceMethod<&NativeModel::dispose>("dispose"),
                               InstanceMethod<&NativeModel::stopForExit>("stopForExit"),
                           });
    }

    explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info), env_(info.Env()) {
        napi_add_env_cleanup_hook(env_, &NativeModel::onEnvCleanup, this);
    }

    ~NativeModel() override {
        napi_remove_env_cleanup_hook(env_, &NativeModel::onEnvCleanup, this);
        shutdown();
    }

    // process.exit() skips Node's environment cleanup hooks and runs C++ static
    // destructors while the engine thread may still be decoding. JS calls this from
    // process.on("exit"): abort everything and wait for the engine thread; free nothing.
    Napi::Value stopForExit(const Napi::CallbackInfo& info) {
        disposing_ = true;
        for (auto& entry : requests_) entry.second->store(true);
        if (counter_) counter_->stopAndJoin();
        if (engine_) engine_->stopAndJoin();
        return info.Env().Undefined();
    }

    // Called on the JS thread when a request settles.
    void settled(uint32_t id) {
        requests_.erase(id);
        if (id == disposeId_) finishDispose();
    }

 private:
    static void onEnvCleanup(void* self) { static_cast<NativeModel*>(self)->shutdown(); }

    // Aborts everything, waits for the engine thread and frees the model. Idempotent.
    void shutdown() {
        disposed_ = true;
        disposing_ = true;
        for (auto& entry : requests_) entry.second->store(true);
        finishDispose();
    }

    void finishDispose() {
        counter_.reset();  // runs what it has queued first
        engine_.reset();   // the unload task was the last one; this returns at once
        if (logFn_) {
            logFn_.Release();
            logFn_ = Napi::ThreadSafeFunction();
        }
    }

    bool guard(Napi::Env env, bool needLoaded) {
        const char* code = nullptr;
        const char* message = nullptr;
        if (disposed_) {
            code = "E_DISPOSED";
            message = "the model has been disposed";
        } else if (needLoaded && !loaded_) {
            code = "E_NOT_LOADED";
            message = "the model is not loaded";
        }
        if (code == nullptr) return true;
        codedError(env, code, message).ThrowAsJavaScriptException();
        return false;
    }

    // Makes request `id`: its abort flag, its promise, and the thread-safe function that
    // carries its events to `callback` and settles the promise.
    struct Request {
        std::shared_ptr<std::atomic<bool>> flag;
        OpFunction fn;
        Napi::Promise promise;
    };
    Request makeRequest(const Napi::CallbackInfo& info, uint32_t id, Napi::Function callback) {
        Napi::Env env = info.Env();
        auto flag = std::make_shared<std::atomic<bool>>(false);
        requests_[id] = flag;
        auto* ctx = new OpContext{Napi::Promise::Deferred::New(env), Napi::Persistent(info.This().As<Napi::Object>()),
                                  this, id};
        Napi::Promise promise = ctx->deferred.Promise();
        OpFunction fn = OpFunction::New(env, callback, "multimodal-lm", 0, 1, ctx,
                                        [](Napi::Env, void*, OpContext* c) { delete c; });
        return {flag, fn, promise};
    }

    // The last event of a request: its failure (an abort caused by dispose() reads as E_DISPOSED).
    static Event* failure(const CodedError& e, const std::atomic<bool>& disposing) {
        auto* event = new Event{Event::Kind::Fail, 0, e.what(), {}, e.code()};
        if (event->code == "E_ABORTED" && disposing.load()) {
            event->code = "E_DISPOSED";
            event->text = "the model was disposed while this request was running";
        }
        return event;
    }

    // Runs `work` as request `id` on `runner` (the engine thread between steps, or the counting
    // thread); the promise settles with its result. `work` gets an Emitter for progress and the
    // request's abort flag.
    template <typename Post, typename Work>
    Napi::Value schedule(const Napi::CallbackInfo& info, uint32_t id, Napi::Function callback, Post runner, Work work) {
        Request r = makeRequest(info, id, callback);
        Engine* engine = engine_.get();
        std::atomic<bool>* disposing = &disposing_;
        runner([engine, disposing, fn = r.fn, flag = r.flag, work]() mutable {
            Emitter emit(fn);
            Event* event = nullptr;
            try {
                event = new Event{Event::Kind::Done, 0, {}, work(*engine, emit, flag.get()), {}};
            } catch (const CodedError& e) {
                event = failure(e, *disposing);
            } catch (const std::exception& e) {
                event = failure(CodedError("E_ENGINE", std::string("Unknown error in the native engine: ") + e.what()),
                                *disposing);
            }
            emit.send(event);
            fn.Release();
        });
        return r.promise;
    }
    template <typename Work>
    Napi::Value schedule(const Napi::CallbackInfo& info, uint32_t id, Napi::Function callback, Work work) {
        Engine* engine = engine_.get();
        return schedule(
            info, id, callback, [engine](std::function<void()> task) { engine->post(std::move(task)); }, work);
    }

    Napi::Value load(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        if (!guard(env, false)) return env.Undefined();
        if (loading_ || loaded_) {
            codedError(env, "E_BUSY", loaded_ ? "the model is already loaded" : "load() is already running")
                .ThrowAsJavaScriptException();
            return env.Undefined();
        }
        const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
        Napi::Object o = info[1].As<Napi::Object>();
        Napi::Function onProgress = info[2].As<Napi::Function>();
        const int32_t logLevel = info[3].As<Napi::Number>().Int32Value();
        if (logLevel > 0 && info[4].IsFunction()) {
            logFn_ = Napi::ThreadSafeFunction::New(env, info[4].As<Napi::Function>(), "multimodal-lm log", 0, 1);
            logFn_.Unref(env);
        }
        Napi::ThreadSafeFunction logFn = logFn_;
        sink_ = std::make_unique<LogSink>(logLevel, [logFn](int level, const std::string& line) mutable {
            if (!logFn) return;
            auto* l = new LogLine{level, line};
            napi_status status = logFn.NonBlockingCall(l, [](Napi::Env env, Napi::Function fn, LogLine* l) {
                if (env != nullptr) fn.Call({Napi::Number::New(env, l->level), Napi::String::New(env, l->text)});
                delete l;
            });
            if (status != napi_ok) delete l;
        });

        LoadParams p;
        p.model = getString(o, "model");
        p.mmproj = getString(o, "mmproj");
        p.chatTemplate = getString(o, "chatTemplate");
        p.contextSize = getInt(o, "contextSize", p.contextSize);
        p.threads = getInt(o, "threads", p.threads);
        p.batchSize = getInt(o, "batchSize", p.batchSize);
        p.gpuLayers = getInt(o, "gpuLayers", p.gpuLayers);
        p.mmprojOnGpu = getBool(o, "mmprojOnGpu", p.mmprojOnGpu);
        p.flashAttention = getInt(o, "flashAttention", p.flashAttention);
        p.imageMinTokens = getInt(o, "imageMinTokens", p.imageMinTokens);
        p.imageMaxTokens = getInt(o, "imageMaxTokens", p.imageMaxTokens);
        p.warmup = getBool(o, "warmup", p.warmup);
        Napi::Value cacheBytes = o.Get("imageCacheBytes");
        if (cacheBytes.IsNumber())
            p.imageCacheBytes = static_cast<uint64_t>(cacheBytes.As<Napi::Number>().Int64Value());
        p.reusePrefix = getBool(o, "reusePrefix", p.reusePrefix);
        p.parallel = getInt(o, "parallel", p.parallel);
        p.vocabOnly = getBool(o, "vocabOnly", p.vocabOnly);
        Napi::Value rpc = o.Get("rpc");
        if (rpc.IsArray()) {
            Napi::Array a = rpc.As<Napi::Array>();
            for (uint32_t i = 0; i < a.Length(); ++i) p.rpc.push_back(a.Get(i).As<Napi::String>().Utf8Value());
        }

        engine_ = std::make_unique<Engine>(sink_.get());
        counter_ = std::make_unique<Worker>();
        loading_ = true;
        loadId_ = id;
        return schedule(info, id, onProgress, [p](Engine& engine, Emitter& emit, const std::atomic<bool>* abort) {
            ModelInfo mi = engine.load(
                p, [&emit](float v) { emit.progress(v); }, abort);
            return std::function<Napi::Value(Napi::Env)>([mi](Napi::Env env) -> Napi::Value {
                Napi::Object out = Napi::Object::New(env);
                out.Set("contextSize", mi.contextSize);
                out.Set("trainContextSize", mi.trainContextSize);
                out.Set("embeddingSize", mi.embeddingSize);
                out.Set("vocabSize", mi.vocabSize);
                out.Set("layers", mi.layers);
                out.Set("architecture", mi.architecture);
                out.Set("projector", mi.projector);
                out.Set("description", mi.description);
                out.Set("marker", mi.marker);
                out.Set("hasChatTemplate", mi.hasChatTemplate);
                out.Set("vision", mi.vision);
                out.Set("audio", mi.audio);
                out.Set("audioSampleRate", mi.audioSampleRate);
                out.Set("mrope", mi.mrope);
                out.Set("frameMerge", mi.frameMerge);
                out.Set("parallel", mi.parallel);
                out.Set("batchSize", mi.batchSize);
                out.Set("ubatchSize", mi.ubatchSize);
                out.Set("loadMs", mi.loadMs);
                return out;
            });
        });
    }

    Napi::Value generate(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        if (!guard(env, true)) return env.Undefined();
        const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
        Napi::Object o = info[1].As<Napi::Object>();
        auto p = std::make_shared<GenerateParams>();
        p->prompt = getString(o, "prompt");
        p->addSpecial = getBool(o, "addSpecial", true);
        p->media = readMediaItems(o.Get("media"));
        SamplingParams& s = p->sampling;
        s.temperature = getFloat(o, "temperature", s.temperature);
        s.topK = getInt(o, "topK", s.topK);
        s.topP = getFloat(o, "topP", s.topP);
        s.minP = getFloat(o, "minP", s.minP);
        s.repeatPenalty = getFloat(o, "repeatPenalty", s.repeatPenalty);
        s.repeatLastN = getInt(o, "repeatLastN", s.repeatLastN);
        s.presencePenalty = getFloat(o, "presencePenalty", s.presencePenalty);
        s.frequencyPenalty = getFloat(o, "frequencyPenalty", s.frequencyPenalty);
        s.seed = getUint(o, "seed", s.seed);
        p->maxTokens = getInt(o, "maxTokens", p->maxTokens);
        p->ignoreEos = getBool(o, "ignoreEos", false);
        p->stop = readStrings(o.Get("stop"));
        p->constraint = readConstraint(o.Get("constraint"));
        p->logprobs = getInt(o, "logprobs", -1);
        Napi::Value bias = o.Get("logitBias");
        if (bias.IsArray()) {
            Napi::Array a = bias.As<Napi::Array>();
            for (uint32_t i = 0; i < a.Length(); ++i) {
                Napi::Array pair = a.Get(i).As<Napi::Array>();
                p->logitBias.emplace_back(pair.Get(0u).As<Napi::Number>().Int32Value(),
                                          pair.Get(1u).As<Napi::Number>().FloatValue());
            }
        }
        Request r = makeRequest(info, id, info[2].As<Napi::Function>());
        auto job = std::make_unique<GenerateJob>();
        job->params = std::move(*p);
        job->abort = r.flag;
        Emitter emit(r.fn);
        OpFunction fn = r.fn;
        std::atomic<bool>* disposing = &disposing_;
        job->onPiece = [emit](const std::string& piece) { emit.piece(piece); };
        if (job->params.logprobs >= 0) {
            job->onLogprobs = [emit](const TokenLogprobs& l) {
                auto shared = std::make_shared<TokenLogprobs>(l);
                emit.send(new Event{Event::Kind::Logprobs,
                                    0,
                                    {},
                                    [shared](Napi::Env env) -> Napi::Value { return logprobsObject(env, *shared); },
                                    {}});
            };
        }
        job->onDone = [emit, fn](GenerateResult&& result) mutable {
            auto shared = std::make_shared<GenerateResult>(std::move(result));
            emit.send(new Event{
                Event::Kind::Done, 0, {}, [shared](Napi::Env env) { return resultObject(env, *shared); }, {}});
            fn.Release();
        };
        job->onFail = [emit, fn, disposing](const CodedError& e) mutable {
            emit.send(failure(e, *disposing));
            fn.Release();
        };
        engine_->submit(std::move(job));
        return r.promise;
    }

    static Napi::Value resultObject(Napi::Env env, const GenerateResult& r) {
        Napi::Object out = Napi::Object::New(env);
        out.Set("text", r.text);
        out.Set("stopReason", r.stopReason);
        out.Set("promptTokens", r.promptTokens);
        out.Set("promptPositions", r.promptPositions);
        out.Set("mediaTokens", r.mediaTokens);
        out.Set("mediaChunks", r.mediaChunks);
        out.Set("completionTokens", r.completionTokens);
        out.Set("encodeMs", r.encodeMs);
        out.Set("promptMs", r.promptMs);
        out.Set("generationMs", r.generationMs);
        out.Set("timeToFirstTokenMs", r.timeToFirstTokenMs);
        out.Set("totalMs", r.totalMs);
        out.Set("reusedPositions", r.reusedPositions);
        out.Set("reusedTokens", r.reusedTokens);
        out.Set("evaluatedPositions", r.evaluatedPositions);
        out.Set("imageCacheHits", r.imageCacheHits);
        out.Set("imageCacheMisses", r.imageCacheMisses);
        out.Set("encodedChunks", r.encodedChunks);
        Napi::Array logprobs = Napi::Array::New(env, r.logprobs.size());
        for (size_t i = 0; i < r.logprobs.size(); ++i) {
            logprobs.Set(static_cast<uint32_t>(i), logprobsObject(env, r.logprobs[i]));
        }
        out.Set("logprobs", logprobs);
        return out;
    }

    Napi::Value embedImage(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        if (!guard(env, true)) return env.Undefined();
        const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
        auto media = std::make_shared<Media>(readMedia(info[1].As<Napi::Object>()));
        return schedule(info, id, info[2].As<Napi::Function>(),
                        [media](Engine& engine, Emitter&, const std::atomic<bool>* abort) {
                            auto r = std::make_shared<EmbedResult>(engine.embedImage(*media, abort));
                            return std::function<Napi::Value(Napi::Env)>([r](Napi::Env env) -> Napi::Value {
                                Napi::Float32Array data = Napi::Float32Array::New(env, r->data.size());
                                std::copy(r->data.begin(), r->data.end(), data.Data());
                                Napi::Object out = Napi::Object::New(env);
                                out.Set("data", data);
                                out.Set("tokens", r->tokens);
                                out.Set("embeddingSize", r->embeddingSize);
                                out.Set("chunks", r->chunks);
                                out.Set("imageCacheHits", r->imageCacheHits);
                                out.Set("encodeMs", r->encodeMs);
                                return out;
                            });
                        });
    }

    Napi::Value countTokens(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        if (!guard(env, true)) return env.Undefined();
        const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
        std::string prompt = info[1].As<Napi::String>().Utf8Value();
        auto media = std::make_shared<std::vector<MediaItem>>(readMediaItems(info[2]));
        const bool addSpecial = info[3].As<Napi::Boolean>().Value();
        Worker* counter = counter_.get();
        auto onCounter = [counter](std::function<void()> task) { counter->post(std::move(task)); };
        return schedule(info, id, info[4].As<Napi::Function>(), onCounter,
                        [prompt, media, addSpecial](Engine& engine, Emitter&, const std::atomic<bool>*) {
                            TokenCount c = engine.countTokens(prompt, *media, addSpecial);
                            return std::function<Napi::Value(Napi::Env)>([c](Napi::Env env) -> Napi::Value {
                                Napi::Object out = Napi::Object::New(env);
                                out.Set("tokens", c.tokens);
                                out.Set("positions", c.positions);
                                out.Set("textTokens", c.textTokens);
                                out.Set("mediaTokens", c.mediaTokens);
                                out.Set("mediaChunks", c.mediaChunks);
                                return out;
                            });
                        });
    }

    Napi::Value clearCaches(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        if (!guard(env, true)) return env.Undefined();
        const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
        return schedule(info, id, info[1].As<Napi::Function>(), [](Engine& engine, Emitter&, const std::atomic<bool>*) {
            engine.clearCaches();
            return std::function<Napi::Value(Napi::Env)>([](Napi::Env env) -> Napi::Value { return env.Undefined(); });
        });
    }

    // Synchronous: the counters are atomics or behind the cache's lock.
    Napi::Value stats(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        if (!guard(env, true)) return env.Undefined();
        const EngineStats st = engine_->stats();
        auto number = [&env](uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); };
        Napi::Object cache = Napi::Object::New(env);
        cache.Set("hits", number(st.imageCache.hits));
        cache.Set("misses", number(st.imageCache.misses));
        cache.Set("evictions", number(st.imageCache.evictions));
        cache.Set("entries", number(st.imageCache.entries));
        cache.Set("bytes", number(st.imageCache.bytes));
        cache.Set("capacityBytes", number(st.imageCache.capacityBytes));
        Napi::Object out = Napi::Object::New(env);
        out.Set("requests", number(st.requests));
        out.Set("busySlots", number(st.busySlots));
        out.Set("queued", number(st.queued));
        out.Set("reusedPositions", number(st.reusedPositions));
        out.Set("evaluatedPositions", number(st.evaluatedPositions));
        out.Set("imageCache", cache);
        return out;
    }

    Napi::Value cancel(const Napi::CallbackInfo& info) {
        auto it = requests_.find(info[0].As<Napi::Number>().Uint32Value());
        if (it != requests_.end()) {
            it->second->store(true);
            if (engine_) engine_->wake();
        }
        return info.Env().Undefined();
    }

    // Runs `fn` and turns a CodedError into a thrown JS error.
    template <typename Fn>
    Napi::Value sync(Napi::Env env, Fn fn) {
        if (!guard(env, true)) return env.Undefined();
        try {
            return fn();
        } catch (const CodedError& e) {
            codedError(env, e.code(), e.what()).ThrowAsJavaScriptException();
        } catch (const std::exception& e) {
            codedError(env, "E_ENGINE", e.what()).ThrowAsJavaScriptException();
        }
        return env.Undefined();
    }

    // applyChat(requestJson): the prompt and the output grammar for a chat request.
    Napi::Value applyChat(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        return sync(env, [&]() -> Napi::Value {
            ChatParams c = engine_->chat().apply(info[0].As<Napi::String>().Utf8Value());
            Napi::Object out = Napi::Object::New(env);
            out.Set("prompt", c.prompt);
            out.Set("grammar", c.grammar);
            out.Set("lazy", c.grammarLazy);
            Napi::Array triggers = Napi::Array::New(env, c.triggers.size());
            for (size_t i = 0; i < c.triggers.size(); ++i) {
                Napi::Object t = Napi::Object::New(env);
                t.Set("type", c.triggers[i].type);
                t.Set("value", c.triggers[i].value);
                triggers.Set(static_cast<uint32_t>(i), t);
            }
            out.Set("triggers", triggers);
            auto strings = [&env](const std::vector<std::string>& v) {
                Napi::Array a = Napi::Array::New(env, v.size());
                for (size_t i = 0; i < v.size(); ++i) a.Set(static_cast<uint32_t>(i), v[i]);
                return a;
            };
            out.Set("preservedTokens", strings(c.preservedTokens));
            out.Set("additionalStops", strings(c.additionalStops));
            out.Set("generationPrompt", c.generationPrompt);
            out.Set("format", c.format);
            out.Set("parser", c.parser);
            out.Set("continuation", c.continuation);
            out.Set("toolsPrefilled", c.toolsPrefilled);
            out.Set("toolCallMarker", c.toolCallMarker);
            out.Set("parallelToolCalls", c.parallelToolCalls);
            out.Set("supportsTools", engine_->chat().supportsTools());
            return out;
        });
    }

    // parseChat(text, partial, format, parser, generationPrompt, continuation)
    Napi::Value parseChat(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        return sync(env, [&]() -> Napi::Value {
            ParsedChat p =
                engine_->chat().parse(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Boolean>().Value(),
                                      info[2].As<Napi::Number>().Int32Value(), info[3].As<Napi::String>().Utf8Value(),
                                      info[4].As<Napi::String>().Utf8Value(), info[5].As<Napi::Boolean>().Value());
            Napi::Object out = Napi::Object::New(env);
            out.Set("content", p.content);
            out.Set("reasoning", p.reasoning);
            Napi::Array calls = Napi::Array::New(env, p.toolCalls.size());
            for (size_t i = 0; i < p.toolCalls.size(); ++i) {
                Napi::Object call = Napi::Object::New(env);
                call.Set("id", p.toolCalls[i].id);
                call.Set("name", p.toolCalls[i].name);
                call.Set("arguments", p.toolCalls[i].arguments);
                calls.Set(static_cast<uint32_t>(i), call);
            }
            out.Set("toolCalls", calls);
            if (!p.error.empty()) out.Set("error", p.error);
            return out;
        });
    }

    Napi::Value schemaToGrammar(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        return sync(env, [&]() -> Napi::Value {
            return Napi::String::New(env, ChatLayer::schemaToGrammar(info[0].As<Napi::String>().Utf8Value()));
        });
    }

    Napi::Value checkGrammar(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        return sync(env, [&]() -> Napi::Value {
            engine_->chat().checkGrammar(info[0].As<Napi::String>().Utf8Value());
            return env.Undefined();
        });
    }

    Napi::Value tokenize(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        if (!guard(env, true)) return env.Undefined();
        std::vector<int32_t> tokens =
            engine_->tokenize(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::Boolean>().Value(),
                              info[2].As<Napi::Boolean>().Value());
        Napi::Uint32Array out = Napi::Uint32Array::New(env, tokens.size());
        for (size_t i = 0; i < tokens.size(); ++i) out[i] = static_cast<uint32_t>(tokens[i]);
        return out;
    }

    Napi::Value detokenize(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        if (!guard(env, true)) return env.Undefined();
        Napi::Uint32Array a = info[0].As<Napi::Uint32Array>();
        std::vector<int32_t> tokens(a.ElementLength());
        for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(a[i]);
        return Napi::String::New(env, engine_->detokenize(tokens));
    }

    // Aborts running and queued requests, then frees the model on the engine thread.
    Napi::Value dispose(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        if (disposed_ || !engine_) {
            shutdown();
            Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
            d.Resolve(env.Undefined());
            return d.Promise();
        }
        const uint32_t id = info[0].As<Napi::Number>().Uint32Value();
        disposing_ = true;
        for (auto& entry : requests_) entry.second->store(true);
        Worker* counter = counter_.get();
        Napi::Value promise = schedule(info, id, info[1].As<Napi::Function>(),
                                       [counter](Engine& engine, Emitter&, const std::atomic<bool>*) {
                                           // A count still running reads the projector: let it finish first.
                                           if (counter != nullptr) counter->stopAndJoin();
                                           engine.unload();
                                           return std::function<Napi::Value(Napi::Env)>(
                                               [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
                                       });
        disposed_ = true;
        disposeId_ = id;
        return promise;
    }

 public:
    void loadSettled(uint32_t id, bool ok) {
        if (id != loadId_) return;
        loading_ = false;
        loaded_ = ok;
    }

 private:
    napi_env env_;
    std::unique_ptr<LogSink> sink_;
    std::unique_ptr<Engine> engine_;
    std::unique_ptr<Worker> counter_;                                  // countTokens: never waits behind a generation
    std::map<uint32_t, std::shared_ptr<std::atomic<bool>>> requests_;  // JS thread only
    Napi::ThreadSafeFunction logFn_;
    std::atomic<bool> disposing_{false};
    bool disposed_ = false;
    bool loading_ = false;
    bool loaded_ = false;
    uint32_t loadId_ = 0;
    uint32_t disposeId_ = 0;
};

void callJs(Napi::Env env, Napi::Function callback, OpContext* ctx, Event* event) {
    std::unique_ptr<Event> owned(event);
    if (env == nullptr || ctx == nullptr) return;
    switch (event->kind) {
        case Event::Kind::Progress:
            callback.Call({Napi::Number::New(env, event->progress)});
            return;
        case Event::Kind::Piece:
            callback.Call({Napi::String::New(env, event->text)});
            return;
        case Event::Kind::Logprobs:
            callback.Call({env.Undefined(), event->value(env)});
            return;
        case Event::Kind::Done: {
            Napi::Value value = event->value(env);
            ctx->model->loadSettled(ctx->id, true);
            ctx->model->settled(ctx->id);
            ctx->deferred.Resolve(value);
            return;
        }
        case Event::Kind::Fail: {
            ctx->model->loadSettled(ctx->id, false);
            ctx->model->settled(ctx->id);
            ctx->deferred.Reject(codedError(env, event->code, event->text).Value());
            return;
        }
    }
}

}  // namespace

void initNativeModel(Napi::Env env, Napi::Object exports) { exports.Set("NativeModel", NativeModel::define(env)); }

}  // namespace mmlm
