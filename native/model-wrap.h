#pragma once
// N-API glue for one loaded model: converts JS values to the plain structs of
// engine.h, queues work on the model's engine thread (worker.h), and settles
// promises and streams pieces through thread-safe functions.
#include <napi.h>

namespace mmlm {

// Adds the NativeModel class to `exports`.
void initNativeModel(Napi::Env env, Napi::Object exports);

}  // namespace mmlm
