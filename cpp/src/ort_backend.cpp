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

    Tensor run(const Feeds& feeds, const std::string& output) override {
        const auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
        std::vector<const char*> names;
        std::vector<Ort::Value> values;
        for (const auto& [name, t] : feeds) {
            names.push_back(name.c_str());
            values.push_back(Ort::Value::CreateTensor<float>(mem, const_cast<float*>(t->data.data()),
                                                             t->data.size(), t->shape.data(), t->shape.size()));
        }
        const char* out_name = output.c_str();
        try {
            auto outs = session_.Run(Ort::RunOptions{nullptr}, names.data(), values.data(), values.size(),
                                     &out_name, 1);
            return to_tensor(outs.at(0));
        } catch (const Ort::Exception& e) {
            throw OvssError(std::string("onnxruntime run failed: ") + e.what());
        }
    }

private:
    static Tensor to_tensor(const Ort::Value& v) {
        const auto info = v.GetTensorTypeAndShapeInfo();
        if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
            throw ModelFolderError("model output is not float32");
        Tensor t;
        t.shape = info.GetShape();
        const float* p = v.GetTensorData<float>();
        t.data.assign(p, p + info.GetElementCount());
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
