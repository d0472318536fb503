// Backend choice: onnxruntime always; TensorRT when compiled in (OVSS_HAVE_TENSORRT).
#include "ovss/backend.hpp"

#include "ovss/errors.hpp"
#include "ovss/ort_backend.hpp"
#ifdef OVSS_HAVE_TENSORRT
#include "ovss/trt_backend.hpp"
#endif

namespace ovss {

bool tensorrt_compiled() {
#ifdef OVSS_HAVE_TENSORRT
    return true;
#else
    return false;
#endif
}

namespace {

std::unique_ptr<Backend> open_tensorrt(const BackendOptions& options) {
#ifdef OVSS_HAVE_TENSORRT
    if (options.engine.empty())
        throw BackendUnavailable("the tensorrt backend needs --engine FILE (build one with python -m export.engine)");
    return make_trt_backend(options.engine);
#else
    (void)options;
    throw BackendUnavailable("this build has no TensorRT backend (CMake did not find TensorRT and CUDA; "
                             "configure with -DOVSS_WITH_TENSORRT=ON where they are installed)");
#endif
}

}  // namespace

std::unique_ptr<Backend> open_backend(const std::string& choice, const std::filesystem::path& onnx_path,
                                      const BackendOptions& options) {
    if (choice == "onnxruntime") return make_ort_backend(onnx_path, options.threads);
    if (choice == "tensorrt") return open_tensorrt(options);
    if (choice == "auto") {
        if (tensorrt_compiled() && !options.engine.empty()) return open_tensorrt(options);
        return make_ort_backend(onnx_path, options.threads);
    }
    throw ConfigError("unknown backend '" + choice + "'; choose from auto, onnxruntime, tensorrt");
}

}  // namespace ovss
