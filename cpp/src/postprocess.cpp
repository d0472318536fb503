// Bilinear taps, palette, overlay and legend strip, as runtime/postprocess.py.
#include "ovss/postprocess.hpp"

#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "ovss/errors.hpp"
#include "ovss/label_map.hpp"

namespace ovss {

BilinearTaps bilinear_taps(int out_len, int in_len, double span) {
    BilinearTaps t;
    t.i0.resize(out_len), t.i1.resize(out_len), t.w0.resize(out_len), t.w1.resize(out_len);
    const double step = static_cast<double>(in_len) / span;
    for (int i = 0; i < out_len; ++i) {
        double src = (static_cast<double>(i) + 0.5) * step - 0.5;
        src = std::min(std::max(src, 0.0), static_cast<double>(in_len - 1));
        const int i0 = static_cast<int>(std::floor(src));
        const int i1 = std::min(i0 + 1, in_len - 1);
        const double frac = src - i0;
        t.i0[i] = i0, t.i1[i] = i1;
        // Python adds both weights into one dense matrix: a shared index sums them.
        t.w0[i] = i0 == i1 ? (1.0 - frac) + frac : 1.0 - frac;
        t.w1[i] = i0 == i1 ? 0.0 : frac;
    }
    return t;
}

std::vector<Rgb> palette(int num_classes) {
    std::vector<Rgb> colours(num_classes, Rgb{0, 0, 0});
    for (int i = 0; i < num_classes; ++i) {
        const int idx = i + 1;
        for (int bit = 0; bit < 8; ++bit)
            for (int ch = 0; ch < 3; ++ch)
                colours[i][ch] |= static_cast<uint8_t>(((idx >> (3 * bit + ch)) & 1) << (7 - bit));
    }
    return colours;
}

cv::Mat overlay(const cv::Mat& rgb, const cv::Mat& labels, const std::vector<Rgb>& colours, double alpha) {
    if (rgb.type() != CV_8UC3 || labels.type() != CV_32S || rgb.size() != labels.size())
        throw ConfigError("overlay needs HxWx3 uint8 and an HxW int32 label map of the same size");
    const float a = static_cast<float>(alpha), b = static_cast<float>(1.0 - alpha);
    cv::Mat out(rgb.size(), CV_8UC3);
    for (int y = 0; y < rgb.rows; ++y) {
        const uint8_t* src = rgb.ptr<uint8_t>(y);
        const int32_t* lab = labels.ptr<int32_t>(y);
        uint8_t* dst = out.ptr<uint8_t>(y);
        for (int x = 0; x < rgb.cols; ++x) {
            if (lab[x] == kUnknown && static_cast<size_t>(lab[x]) >= colours.size()) {
                std::copy(src + x * 3, src + x * 3 + 3, dst + x * 3);
                continue;
            }
            const Rgb& col = colours.at(static_cast<size_t>(lab[x]));
            for (int c = 0; c < 3; ++c) {
                const float v = b * static_cast<float>(src[x * 3 + c]) + a * static_cast<float>(col[c]) + 0.5f;
                dst[x * 3 + c] = static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, v)));
            }
        }
    }
    return out;
}

cv::Mat scores_to_u8(const cv::Mat& scores) {
    if (scores.type() != CV_32F) throw ConfigError("a score map must be CV_32F");
    cv::Mat out(scores.size(), CV_8U);
    for (int y = 0; y < scores.rows; ++y) {
        const float* in = scores.ptr<float>(y);
        uint8_t* dst = out.ptr<uint8_t>(y);
        for (int x = 0; x < scores.cols; ++x) {
            const float v = std::nearbyint(255.0f * in[x]);  // the default rounding: half to even
            dst[x] = std::isnan(v) ? 0 : static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, v)));
        }
    }
    return out;
}

cv::Mat legend_strip(const std::vector<std::string>& names, const std::vector<Rgb>& colours, int width) {
    const int row = 18, slot = std::max(120, std::min(width, 200));
    const int per_line = std::max(1, width / slot);
    const int lines = (static_cast<int>(names.size()) + per_line - 1) / per_line;
    cv::Mat strip(lines * row + 4, width, CV_8UC3, cv::Scalar(255, 255, 255));
    for (size_t i = 0; i < names.size(); ++i) {
        const int x = static_cast<int>(i % per_line) * slot + 4, y = static_cast<int>(i / per_line) * row + 4;
        const Rgb& c = colours.at(i);
        cv::rectangle(strip, {x, y}, {x + row - 6, y + row - 6}, cv::Scalar(c[0], c[1], c[2]), cv::FILLED);
        cv::putText(strip, names[i], {x + row, y + row - 7}, cv::FONT_HERSHEY_SIMPLEX, 0.4,
                    cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
    }
    return strip;
}

}  // namespace ovss
