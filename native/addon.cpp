// N-API glue only: converts between JS values and the plain C++ structs of
// system-info.h / device-check.h; the model class lives in model-wrap.cpp.
// No llama.cpp calls live here.
#include <napi.h>

#include <string>
#include <vector>

#include "device-check.h"
#include "engine.h"
#include "model-wrap.h"
#include "rpc.h"
#include "system-info.h"

namespace {

Napi::Array toStringArray(Napi::Env env, const std::vector<std::string>& values) {
    Napi::Array array = Napi::Array::New(env, values.size());
    for (size_t i = 0; i < values.size(); ++i) array.Set(i, values[i]);
    return array;
}

Napi::Value SystemInfo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const mmlm::SystemInfo si = mmlm::collectSystemInfo();

    Napi::Object out = Napi::Object::New(env);
    out.Set("llamaCppCommit", si.llamaCppCommit);
    out.Set("backend", si.backend);
    out.Set("backends", toStringArray(env, si.backends));
    Napi::Array devices = Napi::Array::New(env, si.devices.size());
    for (size_t i = 0; i < si.devices.size(); ++i) {
        const mmlm::DeviceInfo& d = si.devices[i];
        Napi::Object dev = Napi::Object::New(env);
        dev.Set("name", d.name);
        dev.Set("description", d.description);
        dev.Set("type", d.type);
        dev.Set("backend", d.backend);
        dev.Set("memoryFree", Napi::Number::New(env, static_cast<double>(d.memoryFree)));
        dev.Set("memoryTotal", Napi::Number::New(env, static_cast<double>(d.memoryTotal)));
        devices.Set(i, dev);
    }
    out.Set("devices", devices);
    out.Set("cpuFeatures", toStringArray(env, si.cpuFeatures));
    if (si.cpuVariant.dynamic) {
        Napi::Object variant = Napi::Object::New(env);
        variant.Set("name", si.cpuVariant.chosen.empty() ? env.Null() : Napi::String::New(env, si.cpuVariant.chosen));
        variant.Set("reason", si.cpuVariant.reason);
        variant.Set("dir", si.cpuVariant.dir);
        Napi::Array candidates = Napi::Array::New(env, si.cpuVariant.candidates.size());
        for (size_t i = 0; i < si.cpuVariant.candidates.size(); ++i) {
            const mmlm::CpuVariantCandidate& c = si.cpuVariant.candidates[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("name", c.name);
            o.Set("score", c.score);
            o.Set("usable", c.usable);
            if (!c.note.empty()) o.Set("note", c.note);
            candidates.Set(i, o);
        }
        variant.Set("candidates", candidates);
        out.Set("cpuVariant", variant);
    } else {
        out.Set("cpuVariant", env.Null());
    }
    out.Set("mediaMarker", si.mediaMarker);
    out.Set("llamaSystemInfo", si.llamaSystemInfo);
    return out;
}

Napi::Value MediaMarker(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), mmlm::defaultMediaMarker());
}

// Runs off the JS thread: a GPU check can take a while (driver start-up, shader compile).
class CheckDevicesWorker : public Napi::AsyncWorker {
 public:
    explicit CheckDevicesWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}

    Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
    void Execute() override {
        try {
            results_ = mmlm::checkDevices();
        } catch (const std::exception& e) {
            SetError(std::string("Unknown error when checking devices: ") + e.what());
        }
    }

    void OnOK() override {
        Napi::Env env = Env();
        Napi::Array out = Napi::Array::New(env, results_.size());
        for (size_t i = 0; i < results_.size(); ++i) {
            const mmlm::DeviceCheckResult& r = results_[i];
            Napi::Object item = Napi::Object::New(env);
            item.Set("device", r.device);
            item.Set("backend", r.backend);
            item.Set("ok", r.ok);
            item.Set("maxError", r.maxError);
            item.Set("milliseconds", r.milliseconds);
            if (!r.error.empty()) item.Set("error", r.error);
            out.Set(i, item);
        }
        deferred_.Resolve(out);
    }

    void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
    Napi::Promise::Deferred deferred_;
    std::vector<mmlm::DeviceCheckResult> results_;
};

Napi::Value CheckDevices(const Napi::CallbackInfo& info) {
    auto* worker = new CheckDevicesWorker(info.Env());
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
}

// addRpcServers(["host:port", ...]): registers RPC servers' devices in this process (see rpc.h).
Napi::Value AddRpcServers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array a = info[0].As<Napi::Array>();
    std::vector<std::string> endpoints;
    for (uint32_t i = 0; i < a.Length(); ++i) endpoints.push_back(a.Get(i).As<Napi::String>().Utf8Value());
    try {
        mmlm::addRpcServers(endpoints);
    } catch (const mmlm::CodedError& e) {
        Napi::Error error = Napi::Error::New(env, e.what());
        error.Set("code", Napi::String::New(env, e.code()));
        error.ThrowAsJavaScriptException();
        return env.Undefined();
    }
    return toStringArray(env, mmlm::rpcDevices());
}

// startRpcServer(endpoint, cacheDir, threads): serves this machine's CPU to RPC clients.
Napi::Value StartRpcServer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
        mmlm::startRpcServer(info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value(),
                             info[2].As<Napi::Number>().Int32Value());
    } catch (const mmlm::CodedError& e) {
        Napi::Error error = Napi::Error::New(env, e.what());
        error.Set("code", Napi::String::New(env, e.code()));
        error.ThrowAsJavaScriptException();
    }
    return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
    mmlm::engineInit();
    exports.Set("systemInfo", Napi::Function::New(env, SystemInfo, "systemInfo"));
    exports.Set("mediaMarker", Napi::Function::New(env, MediaMarker, "mediaMarker"));
    exports.Set("checkDevices", Napi::Function::New(env, CheckDevices, "checkDevices"));
    exports.Set("addRpcServers", Napi::Function::New(env, AddRpcServers, "addRpcServers"));
    exports.Set("startRpcServer", Napi::Function::New(env, StartRpcServer, "startRpcServer"));
    mmlm::initNativeModel(env, exports);
    return exports;
}

}  // namespace

NODE_API_MODULE(multimodal_lm, Init)
