// OpenCV INTER_LINEAR resize of uint8 images, and normalisation to float32 NCHW.
//
// The resize is cv::resize with cv::INTER_LINEAR, the interpolation the models are trained and
// evaluated with (cv2 in training/data/transforms.py) and that runtime/preprocess.py reproduces.
// Its uint8 arithmetic: source coordinate (i + 0.5) * scale - 0.5 rounded to float, weights
// (1 - f, f) in 11-bit fixed point, edge columns clamped, a horizontal pass into int32, then
// ((w0 * (r0 >> 4)) >> 16) + ((w1 * (r1 >> 4)) >> 16) rounded by (v + 2) >> 2. OpenCV does not
// promise INTER_LINEAR is bit-exact across versions and CPUs (INTER_LINEAR_EXACT is), so
// cpp/tests/test_resize.cpp checks the linked OpenCV against that arithmetic, and the golden
// test against the Python runtime's bytes.
#include "ovss/preprocess.hpp"

#include <algorithm>
#include <string>

#include <opencv2/imgproc.hpp>

#include "ovss/errors.hpp"

namespace ovss {

cv::Mat resize_bilinear(const cv::Mat& image, int out_h, int out_w) {
    if (image.empty() || image.depth() != CV_8U || image.channels() > 4)
        throw InvalidImageError("resize needs a non-empty uint8 image with 1-4 channels");
    if (out_h <= 0 || out_w <= 0)
        throw ConfigError("resize target must be positive, got " + std::to_string(out_h) + "x" +
                          std::to_string(out_w));
    if (image.rows == out_h && image.cols == out_w) return image.clone();
    cv::Mat out;
    cv::resize(image, out, cv::Size(out_w, out_h), 0, 0, cv::INTER_LINEAR);
    return out;
}

std::pair<int, int> short_side_size(int h, int w, int short_side) {
    if (h <= 0 || w <= 0 || short_side <= 0) throw ConfigError("short_side_size needs positive sizes");
    const double scale = static_cast<double>(short_side) / std::min(h, w);
    // Half up, as the evaluation's int(x + 0.5) (the same double arithmetic as Python's).
    return {std::max(1, static_cast<int>(h * scale + 0.5)),
            std::max(1, static_cast<int>(w * scale + 0.5))};
}

cv::Mat resize_rgb(const cv::Mat& rgb, int out_h, int out_w) {
    if (rgb.rows == out_h && rgb.cols == out_w) return rgb;
    return resize_bilinear(rgb, out_h, out_w);
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
