#include "ovss/tensor.hpp"

#include <sstream>

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

}  // namespace ovss
