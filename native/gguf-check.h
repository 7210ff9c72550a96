#pragma once
// Refuses files that are valid GGUF but inconsistent in ways that make llama.cpp abort or crash
// the whole process (GGML_ASSERT, a null tensor, a template that never ends) instead of failing
// with an error. Reads metadata and tensor shapes only, before llama.cpp or clip.cpp touch them.
#include <string>

namespace mmlm {

// Throws CodedError("E_MODEL_LOAD") naming the file, the key or tensor at fault and what was
// expected. chatTemplateOverride, when not empty, is checked instead of the model's templates.
void checkModelFiles(const std::string& model, const std::string& mmproj, const std::string& chatTemplateOverride);

}  // namespace mmlm
