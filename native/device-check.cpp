#include "device-check.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <memory>
#include <random>
#include <stdexcept>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

namespace mmlm {

namespace {

constexpr int64_t kCols = 256;  // K: a multiple of the Q8_0 block size (32)
constexpr int64_t kRows = 64;   // M
constexpr int64_t kBatch = 8;   // N
constexpr double kTolerance = 0.02;

struct ContextFree {
    void operator()(ggml_context* ctx) const { ggml_free(ctx); }
};
struct BackendFree {
    void operator()(ggml_backend* backend) const { ggml_backend_free(backend); }
};
struct BufferFree {
    void operator()(ggml_backend_buffer* buffer) const { ggml_backend_buffer_free(buffer); }
};

DeviceCheckResult checkOne(ggml_backend_dev_t dev, const std::vector<float>& weights,
                           const std::vector<float>& inputs) {
    DeviceCheckResult result;
    result.device = ggml_backend_dev_name(dev);
    result.backend = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));

    std::unique_ptr<ggml_backend, BackendFree> backend(ggml_backend_dev_init(dev, nullptr));
    if (!backend) {
        result.error = "ggml_backend_dev_init failed";
        return result;
    }

    ggml_init_params params = {ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true};
    std::unique_ptr<ggml_context, ContextFree> ctx(ggml_init(params));
    ggml_tensor* a = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_Q8_0, kCols, kRows);
    ggml_tensor* b = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, kCols, kBatch);
    ggml_tensor* c = ggml_mul_mat(ctx.get(), a, b);
    if (!ggml_backend_dev_supports_op(dev, c)) {
        result.error = "device does not support Q8_0 mul_mat";
        return result;
    }
    std::unique_ptr<ggml_backend_buffer, BufferFree> buffer(ggml_backend_alloc_ctx_tensors(ctx.get(), backend.get()));
    if (!buffer) {
        result.error = "could not allocate device buffer";
        return result;
    }

    std::vector<uint8_t> quantized(ggml_row_size(GGML_TYPE_Q8_0, kCols) * kRows);
    ggml_quantize_chunk(GGML_TYPE_Q8_0, weights.data(), quantized.data(), 0, kRows, kCols, nullptr);
    ggml_backend_tensor_set(a, quantized.data(), 0, quantized.size());
    ggml_backend_tensor_set(b, inputs.data(), 0, inputs.size() * sizeof(float));

    ggml_cgraph* graph = ggml_new_graph(ctx.get());
    ggml_build_forward_expand(graph, c);
    auto start = std::chrono::steady_clock::now();
    if (ggml_backend_graph_compute(backend.get(), graph) != GGML_STATUS_SUCCESS) {
        result.error = "ggml_backend_graph_compute failed";
        return result;
    }
    result.milliseconds = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

    std::vector<float> got(kRows * kBatch);
    ggml_backend_tensor_get(c, got.data(), 0, got.size() * sizeof(float));

    // Reference on the dequantized weights, so only the kernel's own error remains.
    std::vector<float> dequantized(kRows * kCols);
    ggml_get_type_traits(GGML_TYPE_Q8_0)->to_float(quantized.data(), dequantized.data(), kRows * kCols);
    for (int64_t n = 0; n < kBatch; ++n) {
        for (int64_t m = 0; m < kRows; ++m) {
            double want = 0.0;
            double scale = 1e-12;
            for (int64_t k = 0; k < kCols; ++k) {
                const double p = static_cast<double>(dequantized[m * kCols + k]) * inputs[n * kCols + k];
                want += p;
                scale += std::fabs(p);
            }
            const double error = std::fabs(got[n * kRows + m] - want) / scale;
            result.maxError = std::isnan(error) ? INFINITY : std::max(result.maxError, error);
        }
    }
    result.ok = result.maxError <= kTolerance;
    if (!result.ok) result.error = "result differs from the reference";
    return result;
}

}  // namespace

std::vector<DeviceCheckResult> checkDevices() {
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> weights(kRows * kCols);
    std::vector<float> inputs(kBatch * kCols);
    for (float& w : weights) w = normal(rng);
    for (float& x : inputs) x = normal(rng);

    std::vector<DeviceCheckResult> results;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        try {
            results.push_back(checkOne(dev, weights, inputs));
        } catch (const std::exception& e) {
            DeviceCheckResult failed;
            failed.device = ggml_backend_dev_name(dev);
            failed.backend = ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev));
            failed.error = e.what();
            results.push_back(failed);
        }
    }
    return results;
}

}  // namespace mmlm
