// The small interface every inference backend offers (runtime/backends/__init__.py).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ovss/tensor.hpp"

namespace ovss {

/// Named inputs for one run: (input name, tensor view). The data must outlive the call.
using Feeds = std::vector<std::pair<std::string, TensorRef>>;

class Backend {
public:
    virtual ~Backend() = default;
    /// "onnxruntime" or "tensorrt".
    virtual std::string name() const = 0;
    /// Execution providers or devices actually in use.
    virtual std::vector<std::string> providers() const = 0;
    /// Graph input / output names, in order.
    virtual std::vector<std::string> input_names() const = 0;
    virtual std::vector<std::string> output_names() const = 0;
    /// Run once; returns the outputs called ``outputs``, in that order, of whatever dtype.
    virtual std::vector<TypedTensor> run_outputs(const Feeds& feeds, const std::vector<std::string>& outputs) = 0;
    /// Run once; the float32 output called ``output``.
    Tensor run(const Feeds& feeds, const std::string& output) {
        return run_outputs(feeds, std::vector<std::string>{output}).at(0).to_float();
    }
};

struct BackendOptions {
    int threads = 0;                  ///< onnxruntime intra-op threads (0: one per usable core)
    std::filesystem::path engine;     ///< TensorRT: the serialised engine to run
};

/// "onnxruntime", "tensorrt" or "auto" (TensorRT when compiled in and ``engine`` is given,
/// else onnxruntime). Throws BackendUnavailable / ModelFolderError with the reason.
std::unique_ptr<Backend> open_backend(const std::string& choice,
                                      const std::filesystem::path& onnx_path,
                                      const BackendOptions& options);

/// Whether this build has the TensorRT backend (OVSS_WITH_TENSORRT found TensorRT and CUDA).
bool tensorrt_compiled();

}  // namespace ovss
