#pragma once

#include <string>
#include <vector>

namespace mmlm {

// One small Q8_0 x F32 matrix multiply per device, compared with a float64
// reference. It exercises the same quantized kernels a Q8_0 model uses, so a
// backend that would fault (e.g. AMX code the OS does not grant) or compute
// garbage (a broken GPU driver) shows up here instead of mid-generation.
struct DeviceCheckResult {
    std::string device;
    std::string backend;
    bool ok = false;
    double maxError = 0.0;  // max |got - want| / (sum |a*b| over the dot product)
    double milliseconds = 0.0;
    std::string error;
};

std::vector<DeviceCheckResult> checkDevices();

}  // namespace mmlm
