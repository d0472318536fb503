// A dense float32 tensor in C order: the only array type the runtime passes between stages.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ovss {

struct Tensor {
    std::vector<int64_t> shape;  ///< dimensions, outermost first
    std::vector<float> data;     ///< numel() values, C order

    /// A zero-filled tensor of ``shape``.
    static Tensor zeros(std::vector<int64_t> shape);
    /// Product of the dimensions (1 for a scalar).
    int64_t numel() const;
    /// "[1, 3, 224, 224]", for error messages.
    std::string shape_str() const;
};

/// Element types of graph inputs and outputs (float32 logits and images, uint8 images, int labels).
enum class DType { Float32, UInt8, Int32, Int64 };

/// Bytes per element of ``dtype``; its numpy name ("float32", "uint8", ...).
size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

/// A dense tensor of any DType in C order, as raw little-endian bytes (graph outputs, uint8 inputs).
struct TypedTensor {
    DType dtype = DType::Float32;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;  ///< numel() * dtype_size(dtype)

    int64_t numel() const;
    /// The float32 tensor (dtype must be Float32); throws ModelFolderError otherwise.
    Tensor to_float() const;
};

/// A borrowed view of an input: the data must outlive the call that uses it.
struct TensorRef {
    DType dtype;
    const void* data;
    std::vector<int64_t> shape;

    TensorRef(const Tensor& t) : dtype(DType::Float32), data(t.data.data()), shape(t.shape) {}  // NOLINT
    TensorRef(const TypedTensor& t) : dtype(t.dtype), data(t.bytes.data()), shape(t.shape) {}  // NOLINT
    int64_t numel() const;
    size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
};

}  // namespace ovss
