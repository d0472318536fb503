// Sliding-window plan and stitching, step for step as runtime/windows.py.
#include "ovss/windows.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "ovss/errors.hpp"

namespace ovss {
namespace {

std::vector<int> starts(int length, int window, int stride) {
    if (length <= window) return {0};
    std::vector<int> out;
    for (int s = 0; s < length - window; s += stride) out.push_back(s);
    out.push_back(length - window);
    return out;
}

int ceil_to(int v, int p) { return (v + p - 1) / p * p; }

}  // namespace

WindowPlan plan_windows(int h, int w, int window, int stride, int feature_stride) {
    const int p = feature_stride;
    if (p <= 0 || window <= 0 || window % p)
        throw ConfigError("window " + std::to_string(window) + " is not a multiple of the feature stride " +
                          std::to_string(p));
    stride = std::max(p, std::min(window, stride) / p * p);
    WindowPlan plan;
    plan.padded_h = std::max(window, ceil_to(h, p));
    plan.padded_w = std::max(window, ceil_to(w, p));
    plan.window = window;
    plan.feature_stride = p;
    for (int y : starts(plan.padded_h, window, stride))
        for (int x : starts(plan.padded_w, window, stride)) plan.boxes.emplace_back(y, x);
    return plan;
}

int default_stride(int window, int feature_stride) {
    return std::max(feature_stride, (2 * window / 3) / feature_stride * feature_stride);
}

Tensor crop_window(const Tensor& padded, int y, int x, int size) {
    const int64_t hp = padded.shape.at(2), wp = padded.shape.at(3);
    Tensor out = Tensor::zeros({1, 3, size, size});
    for (int c = 0; c < 3; ++c)
        for (int r = 0; r < size; ++r) {
            const float* src = &padded.data[(static_cast<size_t>(c) * hp + y + r) * wp + x];
            std::memcpy(&out.data[(static_cast<size_t>(c) * size + r) * size], src, sizeof(float) * size);
        }
    return out;
}

Tensor stitch(const WindowPlan& plan, const Tensor& padded, const WindowRunner& run) {
    return stitch(plan, [&](int y, int x) { return run(crop_window(padded, y, x, plan.window)); });
}

Tensor stitch(const WindowPlan& plan, const WindowAt& run_at) {
    const int p = plan.feature_stride, fh = plan.feature_h(), fw = plan.feature_w();
    Tensor canvas;
    std::vector<float> count(static_cast<size_t>(fh) * fw, 0.0f);
    for (const auto& [y, x] : plan.boxes) {
        const Tensor out = run_at(y, x);
        if (out.shape.size() != 3) throw ModelFolderError("window scores must be [C,h,w], got " + out.shape_str());
        const int64_t c_n = out.shape[0], h = out.shape[1], w = out.shape[2];
        if (canvas.shape.empty()) canvas = Tensor::zeros({c_n, fh, fw});
        if (c_n != canvas.shape[0] || y / p + h > fh || x / p + w > fw)
            throw ModelFolderError("window scores " + out.shape_str() + " do not fit the canvas " + canvas.shape_str());
        const int cy = y / p, cx = x / p;
        for (int64_t c = 0; c < c_n; ++c)
            for (int64_t r = 0; r < h; ++r)
                for (int64_t i = 0; i < w; ++i)
                    canvas.data[(c * fh + cy + r) * fw + cx + i] += out.data[(c * h + r) * w + i];
        for (int64_t r = 0; r < h; ++r)
            for (int64_t i = 0; i < w; ++i) count[(cy + r) * fw + cx + i] += 1.0f;
    }
    const size_t cells = count.size();
    for (size_t j = 0; j < canvas.data.size(); ++j) canvas.data[j] /= count[j % cells];
    return canvas;
}

}  // namespace ovss
