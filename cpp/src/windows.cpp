// Sliding-window plans and stitching, step for step as runtime/windows.py.
#include "ovss/windows.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

#include "ovss/errors.hpp"
#include "ovss/postprocess.hpp"

namespace ovss {
namespace {

std::vector<int> grid_starts(int length, int window, int stride) {
    if (length <= window) return {0};
    std::vector<int> out;
    for (int s = 0; s < length - window; s += stride) out.push_back(s);
    out.push_back(length - window);
    return out;
}

int ceil_to(int v, int p) { return (v + p - 1) / p * p; }

/// Weights of ``taps`` rounded to float32, as Python's ``w.astype(np.float32)``.
std::pair<std::vector<float>, std::vector<float>> float_weights(const BilinearTaps& t) {
    return {std::vector<float>(t.w0.begin(), t.w0.end()), std::vector<float>(t.w1.begin(), t.w1.end())};
}

/// Add ``out`` [C,h,w] into ``canvas`` [C,ch,cw] at (cy, cx) and count the positions.
void accumulate(Tensor& canvas, std::vector<float>& count, const Tensor& out, int cy, int cx) {
    const int64_t ch = canvas.shape[1], cw = canvas.shape[2];
    const int64_t c_n = out.shape[0], h = out.shape[1], w = out.shape[2];
    if (c_n != canvas.shape[0] || cy + h > ch || cx + w > cw)
        throw ModelFolderError("window scores " + out.shape_str() + " do not fit the canvas " + canvas.shape_str());
    for (int64_t c = 0; c < c_n; ++c)
        for (int64_t r = 0; r < h; ++r)
            for (int64_t i = 0; i < w; ++i)
                canvas.data[(c * ch + cy + r) * cw + cx + i] += out.data[(c * h + r) * w + i];
    for (int64_t r = 0; r < h; ++r)
        for (int64_t i = 0; i < w; ++i) count[(cy + r) * cw + cx + i] += 1.0f;
}

}  // namespace

SlideEdge parse_slide_edge(const std::string& name) {
    if (name == "flush") return SlideEdge::Flush;
    if (name == "grid") return SlideEdge::Grid;
    throw ConfigError("slide_edge must be one of flush, grid, got '" + name + "'");
}

const char* slide_edge_name(SlideEdge edge) { return edge == SlideEdge::Flush ? "flush" : "grid"; }

std::vector<int> window_starts(int size, int crop, int stride) {
    const int n = std::max(size - crop + stride - 1, 0) / stride + 1;
    std::vector<int> out(n);
    for (int i = 0; i < n; ++i) out[i] = std::max(std::min(i * stride + crop, size) - crop, 0);
    return out;
}

WindowPlan plan_windows(int h, int w, int window, int stride, int feature_stride, SlideEdge edge) {
    const int p = feature_stride;
    if (p <= 0 || window <= 0 || window % p)
        throw ConfigError("window " + std::to_string(window) + " is not a multiple of the feature stride " +
                          std::to_string(p));
    if (stride < 1) throw ConfigError("stride must be >= 1 pixel, got " + std::to_string(stride));
    WindowPlan plan;
    plan.window = window;
    plan.feature_stride = p;
    plan.edge = edge;
    std::vector<int> ys, xs;
    if (edge == SlideEdge::Flush) {
        stride = std::min(window, stride);
        plan.padded_h = std::max(window, h);
        plan.padded_w = std::max(window, w);
        ys = window_starts(plan.padded_h, window, stride), xs = window_starts(plan.padded_w, window, stride);
    } else {
        stride = std::max(p, std::min(window, stride) / p * p);
        plan.padded_h = std::max(window, ceil_to(h, p));
        plan.padded_w = std::max(window, ceil_to(w, p));
        ys = grid_starts(plan.padded_h, window, stride), xs = grid_starts(plan.padded_w, window, stride);
    }
    const int64_t n = static_cast<int64_t>(ys.size()) * static_cast<int64_t>(xs.size());
    if (n > kMaxWindows)
        throw ConfigError("a " + std::to_string(h) + "x" + std::to_string(w) + " image with stride " +
                          std::to_string(stride) + " needs " + std::to_string(n) + " windows, over the limit of " +
                          std::to_string(kMaxWindows) + ": use a larger --stride or a smaller image");
    for (int y : ys)
        for (int x : xs) plan.boxes.emplace_back(y, x);
    return plan;
}

int default_stride(int window, int feature_stride) {
    return std::max(feature_stride, (2 * window / 3) / feature_stride * feature_stride);
}

Tensor upsample_bilinear(const Tensor& scores, int out_h, int out_w) {
    if (scores.shape.size() != 3 || scores.numel() == 0)
        throw ModelFolderError("scores to upsample must be a non-empty [C,h,w] tensor, got " + scores.shape_str());
    const int64_t c_n = scores.shape[0], h = scores.shape[1], w = scores.shape[2];
    const BilinearTaps ty = bilinear_taps(out_h, static_cast<int>(h), out_h);
    const BilinearTaps tx = bilinear_taps(out_w, static_cast<int>(w), out_w);
    const auto [u0, u1] = float_weights(tx);
    const auto [v0, v1] = float_weights(ty);
    std::vector<float> cols(static_cast<size_t>(c_n * h) * out_w);
    for (int64_t row = 0; row < c_n * h; ++row) {
        const float* src = &scores.data[row * w];
        float* dst = &cols[row * out_w];
        for (int x = 0; x < out_w; ++x) dst[x] = src[tx.i0[x]] * u0[x] + src[tx.i1[x]] * u1[x];
    }
    Tensor out = Tensor::zeros({c_n, out_h, out_w});
    for (int64_t c = 0; c < c_n; ++c)
        for (int y = 0; y < out_h; ++y) {
            const float* top = &cols[(c * h + ty.i0[y]) * out_w];
            const float* bot = &cols[(c * h + ty.i1[y]) * out_w];
            float* dst = &out.data[(c * out_h + y) * out_w];
            for (int x = 0; x < out_w; ++x) dst[x] = top[x] * v0[y] + bot[x] * v1[y];
        }
    return out;
}

WindowUpsample sigmoid_upsample(std::vector<float> bias) {
    return [bias = std::move(bias)](const Tensor& mask_logits, int size) {
        Tensor u = upsample_bilinear(mask_logits, size, size);
        const int64_t c_n = u.shape[0], plane = static_cast<int64_t>(size) * size;
        if (!bias.empty() && static_cast<int64_t>(bias.size()) != c_n)
            throw ModelFolderError("seen bias has " + std::to_string(bias.size()) + " values for " +
                                   std::to_string(c_n) + " classes");
        for (int64_t c = 0; c < c_n; ++c) {
            const float b = bias.empty() ? 0.0f : bias[c];
            float* v = &u.data[c * plane];
            for (int64_t i = 0; i < plane; ++i) v[i] = 1.0f / (1.0f + std::exp(-v[i])) - b;
        }
        return u;
    };
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

Tensor stitch(const WindowPlan& plan, const Tensor& padded, const WindowRunner& run, const WindowUpsample& up) {
    return stitch(plan, [&](int y, int x) { return run(crop_window(padded, y, x, plan.window)); }, up);
}

Tensor stitch(const WindowPlan& plan, const WindowAt& run_at, const WindowUpsample& up) {
    const bool flush = plan.edge == SlideEdge::Flush;
    const int p = flush ? 1 : plan.feature_stride, ch = plan.canvas_h(), cw = plan.canvas_w(), s = plan.window;
    Tensor canvas;
    std::vector<float> count(static_cast<size_t>(ch) * cw, 0.0f);
    for (const auto& [y, x] : plan.boxes) {
        Tensor out = run_at(y, x);
        if (out.shape.size() != 3) throw ModelFolderError("window scores must be [C,h,w], got " + out.shape_str());
        if (flush) out = up ? up(out, s) : upsample_bilinear(out, s, s);
        if (canvas.shape.empty()) canvas = Tensor::zeros({out.shape[0], ch, cw});
        accumulate(canvas, count, out, y / p, x / p);
    }
    const size_t cells = count.size();
    for (size_t j = 0; j < canvas.data.size(); ++j) canvas.data[j] /= count[j % cells];
    return canvas;
}

}  // namespace ovss
