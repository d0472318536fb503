// onnxruntime backend (runtime/backends/ort.py), CPU execution provider.
#include "ovss/ort_backend.hpp"

#include <sched.h>

#include <algorithm>
#include <thread>

#include <onnxruntime_cxx_api.h>

#include "ovss/errors.hpp"

namespace ovss {
namespace {

/// One onnxruntime environment per process, created on first use, errors-only logging.
Ort::Env& ort_env() {
    static Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "ovss");
    return env;
}

int usable_cores() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return CPU_COUNT(&set);
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

Ort::SessionOptions session_options(int threads) {
    Ort::SessionOptions so;
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    so.SetExecutionMode(ExecutionMode::ORT_SEQUENTIAL);
    so.SetIntraOpNumThreads(threads > 0 ? threads : usable_cores());
    so.SetInterOpNumThreads(1);
    so.SetLogSeverityLevel(3);
    return so;
}

class OrtBackend : public Backend {
public:
    OrtBackend(const std::filesystem::path& path, int threads)
        : session_(ort_env(), path.c_str(), session_options(threads)) {
        Ort::AllocatorWithDefaultOptions alloc;
        for (size_t i = 0; i < session_.GetInputCount(); ++i)
            inputs_.emplace_back(session_.GetInputNameAllocated(i, alloc).get());
        for (size_t i = 0; i < session_.GetOutputCount(); ++i)
            outputs_.emplace_back(session_.GetOutputNameAllocated(i, alloc).get());
    }

    std::string name() const override { return "onnxruntime"; }
    std::vector<std::string> providers() const override { return {"CPUExecutionProvider"}; }
    std::vector<std::string> input_names() const override { return inputs_; }
    std::vector<std::string> output_names() const override { return outputs_; }

    std::vector<TypedTensor> run_outputs(const Feeds& feeds, const std::vector<std::string>& outputs) override {
        const auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
        std::vector<const char*> names, out_names;
        std::vector<Ort::Value> values;
        for (const auto& [name, t] : feeds) {
            names.push_back(name.c_str());
            values.push_back(Ort::Value::CreateTensor(mem, const_cast<void*>(t.data), t.bytes(), t.shape.data(),
                                                      t.shape.size(), ort_type(t.dtype)));
        }
        for (const std::string& name : outputs) out_names.push_back(name.c_str());
        try {
            auto outs = session_.Run(Ort::RunOptions{nullptr}, names.data(), values.data(), values.size(),
                                     out_names.data(), out_names.size());
            std::vector<TypedTensor> result;
            for (const Ort::Value& v : outs) result.push_back(to_typed(v));
            return result;
        } catch (const Ort::Exception& e) {
            throw OvssError(std::string("onnxruntime run failed: ") + e.what());
        }
    }

private:
    static ONNXTensorElementDataType ort_type(DType dtype) {
        switch (dtype) {
            case DType::Float32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
            case DType::UInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
            case DType::Int32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
            case DType::Int64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
        }
        return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    }

    static TypedTensor to_typed(const Ort::Value& v) {
        const auto info = v.GetTensorTypeAndShapeInfo();
        TypedTensor t;
        switch (info.GetElementType()) {
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: t.dtype = DType::Float32; break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: t.dtype = DType::UInt8; break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: t.dtype = DType::Int32; break;
            case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: t.dtype = DType::Int64; break;
            default: throw ModelFolderError("model output has an unsupported element type");
        }
        t.shape = info.GetShape();
        const auto* p = static_cast<const uint8_t*>(v.GetTensorRawData());
        t.bytes.assign(p, p + info.GetElementCount() * dtype_size(t.dtype));
        return t;
    }

    Ort::Session session_;
    std::vector<std::string> inputs_, outputs_;
};

}  // namespace

std::unique_ptr<Backend> make_ort_backend(const std::filesystem::path& model_path, int threads) {
    try {
        return std::make_unique<OrtBackend>(model_path, threads);
    } catch (const Ort::Exception& e) {
        throw ModelFolderError("onnxruntime cannot load '" + model_path.string() + "': " + e.what());
    }
}

}  // namespace ovss
