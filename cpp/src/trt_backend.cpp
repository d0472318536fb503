// TensorRT backend, built only when CMake finds TensorRT and CUDA (OVSS_WITH_TENSORRT).
//
// NOTE: this file has NEVER BEEN COMPILED: the machines this project is developed on have no
// TensorRT headers or GPU. It is written against the documented TensorRT 10 C++ API
// (IRuntime::deserializeCudaEngine, IExecutionContext::setInputShape / setTensorAddress /
// enqueueV3) and the CUDA runtime API; expect small fixes on the first real build (Jetson/JetPack
// or an NVIDIA container). I/O tensors are float32, uint8 (images of graphs that normalise
// themselves), int32 or int64 (in-graph labels).
#include "ovss/trt_backend.hpp"

#include <cuda_runtime_api.h>
#include <NvInferRuntime.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <map>

#include "ovss/errors.hpp"

namespace ovss {
namespace {

class Logger : public nvinfer1::ILogger {
    void log(Severity severity, const char* msg) noexcept override {
        if (severity <= Severity::kWARNING) std::cerr << "tensorrt: " << msg << "\n";
    }
};

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw OvssError(std::string(what) + " failed: " + cudaGetErrorName(err));
}

struct DeviceBuffer {
    void* ptr = nullptr;
    size_t bytes = 0;
};

class TrtBackend : public Backend {
public:
    explicit TrtBackend(const std::filesystem::path& engine_path) {
        int devices = 0;
        if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
            throw BackendUnavailable("no usable CUDA GPU for TensorRT");
        std::ifstream in(engine_path, std::ios::binary);
        if (!in) throw ModelFolderError("TensorRT engine '" + engine_path.string() + "' is missing");
        const std::vector<char> plan((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        runtime_.reset(nvinfer1::createInferRuntime(logger_));
        engine_.reset(runtime_ ? runtime_->deserializeCudaEngine(plan.data(), plan.size()) : nullptr);
        if (!engine_) throw ModelFolderError("TensorRT cannot deserialize '" + engine_path.string() +
                                             "' (built for another GPU or TensorRT version?)");
        context_.reset(engine_->createExecutionContext());
        if (!context_) throw OvssError("TensorRT cannot create an execution context");
        for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
            const char* name = engine_->getIOTensorName(i);
            auto& list = engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? inputs_ : outputs_;
            list.emplace_back(name);
        }
        check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    }

    ~TrtBackend() override {
        for (auto& [name, buf] : buffers_) cudaFree(buf.ptr);
        if (stream_) cudaStreamDestroy(stream_);
    }

    std::string name() const override { return "tensorrt"; }
    std::vector<std::string> providers() const override { return {"TensorRT"}; }
    std::vector<std::string> input_names() const override { return inputs_; }
    std::vector<std::string> output_names() const override { return outputs_; }

    std::vector<TypedTensor> run_outputs(const Feeds& feeds, const std::vector<std::string>& outputs) override {
        for (const auto& [name, t] : feeds) {
            nvinfer1::Dims dims{};
            dims.nbDims = static_cast<int32_t>(t.shape.size());
            for (int i = 0; i < dims.nbDims; ++i) dims.d[i] = t.shape[i];
            if (!context_->setInputShape(name.c_str(), dims)) throw OvssError("TensorRT rejects the shape of " + name);
            if (dtype_of(name) != t.dtype)
                throw OvssError("TensorRT input " + name + " is " + dtype_name(dtype_of(name)) + ", fed " +
                                dtype_name(t.dtype));
            void* ptr = buffer(name, t.bytes());
            check(cudaMemcpyAsync(ptr, t.data, t.bytes(), cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
            context_->setTensorAddress(name.c_str(), ptr);
        }
        std::map<std::string, TypedTensor> shaped;
        for (const std::string& name : outputs_) {  // every output needs an address
            const nvinfer1::Dims d = context_->getTensorShape(name.c_str());
            TypedTensor t;
            t.dtype = dtype_of(name);
            t.shape.assign(d.d, d.d + d.nbDims);
            t.bytes.resize(static_cast<size_t>(t.numel()) * dtype_size(t.dtype));
            context_->setTensorAddress(name.c_str(), buffer(name, t.bytes.size()));
            shaped[name] = std::move(t);
        }
        if (!context_->enqueueV3(stream_)) throw OvssError("TensorRT enqueueV3 failed");
        std::vector<TypedTensor> result;
        for (const std::string& name : outputs) {
            const auto it = shaped.find(name);
            if (it == shaped.end()) throw ModelFolderError("TensorRT engine has no output '" + name + "'");
            result.push_back(std::move(it->second));
            check(cudaMemcpyAsync(result.back().bytes.data(), buffers_.at(name).ptr, result.back().bytes.size(),
                                  cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
        }
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
        return result;
    }

private:
    DType dtype_of(const std::string& name) const {
        switch (engine_->getTensorDataType(name.c_str())) {
            case nvinfer1::DataType::kFLOAT: return DType::Float32;
            case nvinfer1::DataType::kUINT8: return DType::UInt8;
            case nvinfer1::DataType::kINT32: return DType::Int32;
            case nvinfer1::DataType::kINT64: return DType::Int64;
            default: throw ModelFolderError("TensorRT tensor '" + name + "' has an unsupported data type");
        }
    }

    void* buffer(const std::string& name, size_t bytes) {
        DeviceBuffer& buf = buffers_[name];
        if (buf.bytes < bytes) {
            if (buf.ptr) check(cudaFree(buf.ptr), "cudaFree");
            buf = {};
            check(cudaMalloc(&buf.ptr, bytes), "cudaMalloc");
            buf.bytes = bytes;
        }
        return buf.ptr;
    }

    Logger logger_;
    std::unique_ptr<nvinfer1::IRuntime> runtime_;
    std::unique_ptr<nvinfer1::ICudaEngine> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext> context_;
    cudaStream_t stream_ = nullptr;
    std::map<std::string, DeviceBuffer> buffers_;
    std::vector<std::string> inputs_, outputs_;
};

}  // namespace

std::unique_ptr<Backend> make_trt_backend(const std::filesystem::path& engine_path) {
    return std::make_unique<TrtBackend>(engine_path);
}

}  // namespace ovss
