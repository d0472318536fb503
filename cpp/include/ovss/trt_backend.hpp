// TensorRT backend: compiled only when CMake finds TensorRT and CUDA (OVSS_WITH_TENSORRT).
#pragma once

#include <filesystem>
#include <memory>

#include "ovss/backend.hpp"

namespace ovss {

/// Deserialize ``engine_path`` (a TensorRT 10 plan built for this GPU) and run it.
/// Throws BackendUnavailable / ModelFolderError with the reason.
std::unique_ptr<Backend> make_trt_backend(const std::filesystem::path& engine_path);

}  // namespace ovss
