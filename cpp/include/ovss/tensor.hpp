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

}  // namespace ovss
