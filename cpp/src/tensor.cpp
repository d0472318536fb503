#include "ovss/tensor.hpp"

#include <cstring>
#include <sstream>

#include "ovss/errors.hpp"

namespace ovss {

Tensor Tensor::zeros(std::vector<int64_t> shape) {
    Tensor t{std::move(shape), {}};
    t.data.assign(static_cast<size_t>(t.numel()), 0.0f);
    return t;
}

int64_t Tensor::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

std::string Tensor::shape_str() const {
    std::ostringstream s;
    s << "[";
    for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
    s << "]";
    return s.str();
}

namespace {

int64_t product(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

}  // namespace

size_t dtype_size(DType dtype) {
    switch (dtype) {
        case DType::Float32: return 4;
        case DType::UInt8: return 1;
        case DType::Int32: return 4;
        case DType::Int64: return 8;
    }
    return 0;
}

const char* dtype_name(DType dtype) {
    switch (dtype) {
        case DType::Float32: return "float32";
        case DType::UInt8: return "uint8";
        case DType::Int32: return "int32";
        case DType::Int64: return "int64";
    }
    return "?";
}

int64_t TypedTensor::numel() const { return product(shape); }

int64_t TensorRef::numel() const { return product(shape); }

Tensor TypedTensor::to_float() const {
    if (dtype != DType::Float32)
        throw ModelFolderError(std::string("model output is ") + dtype_name(dtype) + ", expected float32");
    Tensor t{shape, std::vector<float>(static_cast<size_t>(numel()))};
    std::memcpy(t.data.data(), bytes.data(), t.data.size() * sizeof(float));
    return t;
}

}  // namespace ovss
