// Pillow-identical BILINEAR resize of uint8 images, and normalisation to float32 NCHW.
//
// The resize reimplements the algorithm of Pillow's libImaging/Resample.c (written from its
// description, not copied): per output sample a triangle filter centred at (i + 0.5) * scale,
// support 1 * max(scale, 1), weights normalised to sum 1 in double, then rounded to 22-bit fixed
// point; accumulation in int starts at 0.5 (1 << 21) and the result is clipped to 0..255 after an
// arithmetic shift. Each pass's output is uint8. Pass order as in Pillow 13: vertical first when
// the height shrinks by more than twice as many pixels as the width does, else horizontal first
// (the order changes the rounding of the intermediate image; older Pillow always went horizontal
// first, so byte equality holds against Pillow 13, the version the golden test runs).
#include "ovss/preprocess.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "ovss/errors.hpp"

namespace ovss {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

/// Fixed-point filter taps for one axis: output i reads in[first[i] .. first[i] + count[i]).
struct Taps {
    int ksize = 0;
    std::vector<int> first, count;
    std::vector<int32_t> k;  ///< ksize per output sample
};

double triangle(double x) {
    x = std::fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

int32_t to_fixed(double w) {
    const double scaled = w * static_cast<double>(1 << kPrecisionBits);
    return static_cast<int32_t>(w < 0 ? -0.5 + scaled : 0.5 + scaled);
}

Taps precompute(int in_size, int out_size) {
    const double scale = static_cast<double>(in_size) / out_size;
    const double filterscale = std::max(scale, 1.0);
    const double support = 1.0 * filterscale;
    Taps t;
    t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
    t.first.resize(out_size);
    t.count.resize(out_size);
    t.k.assign(static_cast<size_t>(out_size) * t.ksize, 0);
    std::vector<double> w(t.ksize);
    for (int i = 0; i < out_size; ++i) {
        const double center = (i + 0.5) * scale;
        const int lo = std::max(0, static_cast<int>(center - support + 0.5));
        const int hi = std::min(in_size, static_cast<int>(center + support + 0.5));
        double total = 0.0;
        for (int x = 0; x < hi - lo; ++x) {
            w[x] = triangle((x + lo - center + 0.5) * (1.0 / filterscale));
            total += w[x];
        }
        for (int x = 0; x < hi - lo; ++x)
            t.k[static_cast<size_t>(i) * t.ksize + x] = to_fixed(total != 0.0 ? w[x] / total : w[x]);
        t.first[i] = lo;
        t.count[i] = hi - lo;
    }
    return t;
}

inline uint8_t clip8(int acc) {
    const int v = acc >> kPrecisionBits;  // arithmetic shift, as in Pillow
    return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

cv::Mat horizontal(const cv::Mat& in, int out_w) {
    const Taps t = precompute(in.cols, out_w);
    const int ch = in.channels();
    cv::Mat out(in.rows, out_w, in.type());
    for (int y = 0; y < in.rows; ++y) {
        const uint8_t* src = in.ptr<uint8_t>(y);
        uint8_t* dst = out.ptr<uint8_t>(y);
        for (int x = 0; x < out_w; ++x) {
            const int32_t* k = &t.k[static_cast<size_t>(x) * t.ksize];
            const uint8_t* s = src + static_cast<size_t>(t.first[x]) * ch;
            for (int c = 0; c < ch; ++c) {
                int acc = 1 << (kPrecisionBits - 1);
                for (int j = 0; j < t.count[x]; ++j) acc += s[j * ch + c] * k[j];
                dst[x * ch + c] = clip8(acc);
            }
        }
    }
    return out;
}

cv::Mat vertical(const cv::Mat& in, int out_h) {
    const Taps t = precompute(in.rows, out_h);
    const int row_len = in.cols * in.channels();
    cv::Mat out(out_h, in.cols, in.type());
    std::vector<int> acc(row_len);
    for (int y = 0; y < out_h; ++y) {
        const int32_t* k = &t.k[static_cast<size_t>(y) * t.ksize];
        std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
        for (int j = 0; j < t.count[y]; ++j) {
            const uint8_t* src = in.ptr<uint8_t>(t.first[y] + j);
            for (int i = 0; i < row_len; ++i) acc[i] += src[i] * k[j];
        }
        uint8_t* dst = out.ptr<uint8_t>(y);
        for (int i = 0; i < row_len; ++i) dst[i] = clip8(acc[i]);
    }
    return out;
}

}  // namespace

cv::Mat resize_bilinear_pillow(const cv::Mat& image, int out_h, int out_w) {
    if (image.empty() || image.depth() != CV_8U || image.channels() > 4)
        throw InvalidImageError("resize needs a non-empty uint8 image with 1-4 channels");
    if (out_h <= 0 || out_w <= 0)
        throw ConfigError("resize target must be positive, got " + std::to_string(out_h) + "x" +
                          std::to_string(out_w));
    cv::Mat out = image.isContinuous() ? image : image.clone();
    const bool vertical_first = image.rows > out_h && (image.rows - out_h) > (image.cols - out_w) * 2;
    if (vertical_first && out_h != out.rows) out = vertical(out, out_h);
    if (out_w != out.cols) out = horizontal(out, out_w);
    if (out_h != out.rows) out = vertical(out, out_h);
    return out.data == image.data ? out.clone() : out;
}

std::pair<int, int> short_side_size(int h, int w, int short_side) {
    if (h <= 0 || w <= 0 || short_side <= 0) throw ConfigError("short_side_size needs positive sizes");
    const double scale = static_cast<double>(short_side) / std::min(h, w);
    // std::nearbyint rounds half to even (the default rounding mode), as Python's round().
    return {std::max(1, static_cast<int>(std::nearbyint(h * scale))),
            std::max(1, static_cast<int>(std::nearbyint(w * scale)))};
}

cv::Mat resize_rgb(const cv::Mat& rgb, int out_h, int out_w) {
    if (rgb.rows == out_h && rgb.cols == out_w) return rgb;
    return resize_bilinear_pillow(rgb, out_h, out_w);
}

void normalize_into(const cv::Mat& rgb, const PreprocessCfg& cfg, Tensor& dst) {
    const int h = rgb.rows, w = rgb.cols;
    const int64_t hp = dst.shape.at(2), wp = dst.shape.at(3);
    if (rgb.type() != CV_8UC3 || h > hp || w > wp)
        throw ConfigError("normalize_into needs HxWx3 uint8 within " + dst.shape_str());
    float mean[3], inv_std[3];
    for (int c = 0; c < 3; ++c) {
        mean[c] = static_cast<float>(cfg.mean[c]);
        inv_std[c] = 1.0f / static_cast<float>(cfg.std[c]);  // float32, like numpy
    }
    for (int y = 0; y < h; ++y) {
        const uint8_t* src = rgb.ptr<uint8_t>(y);
        for (int c = 0; c < 3; ++c) {
            float* out = &dst.data[(static_cast<size_t>(c) * hp + y) * wp];
            for (int x = 0; x < w; ++x) out[x] = (static_cast<float>(src[x * 3 + c]) - mean[c]) * inv_std[c];
        }
    }
}

Tensor normalize(const cv::Mat& rgb, const PreprocessCfg& cfg) {
    Tensor t = Tensor::zeros({1, 3, rgb.rows, rgb.cols});
    normalize_into(rgb, cfg, t);
    return t;
}

}  // namespace ovss
