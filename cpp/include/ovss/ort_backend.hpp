// onnxruntime backend (CPU provider), via the C++ API header over the versioned C API.
#pragma once

#include <filesystem>
#include <memory>

#include "ovss/backend.hpp"

namespace ovss {

/// Open ``model_path`` with onnxruntime: full graph optimisation, sequential execution,
/// ``threads`` intra-op threads (0: one per usable core), one inter-op thread.
/// Throws ModelFolderError when onnxruntime cannot load it.
std::unique_ptr<Backend> make_ort_backend(const std::filesystem::path& model_path, int threads);

}  // namespace ovss
