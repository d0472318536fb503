// Bilinear taps, palette, overlay and legend (runtime/postprocess.py); label maps: label_map.hpp.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "ovss/tensor.hpp"

namespace ovss {

/// Bilinear sampling (align_corners=False) of ``in_len`` cells onto the first ``out_len`` of a
/// ``span``-long output grid, as the nonzero taps of Python's float64 bilinear_matrix rows.
struct BilinearTaps {
    std::vector<int> i0, i1;      ///< input indices per output sample (i0 <= i1)
    std::vector<double> w0, w1;   ///< their weights (w1 = 0 when i0 == i1: merged into w0)
};

BilinearTaps bilinear_taps(int out_len, int in_len, double span);

using Rgb = std::array<uint8_t, 3>;

/// Deterministic colours, one per class (PASCAL VOC bit pattern).
std::vector<Rgb> palette(int num_classes);

/// Colour of the unknown label (255, below the score threshold) in label PNGs and legends.
inline constexpr Rgb kUnknownColour{128, 128, 128};

/// clip((1 - alpha) * image + alpha * colour + 0.5) in float32, truncated to uint8; pixels
/// labelled 255 (unknown) beyond the colours are left as they are (not blended).
/// Args: rgb: HxWx3 uint8; labels: CV_32S HxW in [0, colours.size()) or 255; alpha in [0, 1].
cv::Mat overlay(const cv::Mat& rgb, const cv::Mat& labels, const std::vector<Rgb>& colours,
                double alpha);

/// A score map as an 8-bit image: round(255 * p) (float32 product, half to even, as numpy),
/// clipped to 0..255; NaN -> 0. Args: scores: CV_32F HxW in [0, 1].
cv::Mat scores_to_u8(const cv::Mat& scores);

/// A white strip (OpenCV text) listing ``names`` with their colour swatches, ``width`` wide.
cv::Mat legend_strip(const std::vector<std::string>& names, const std::vector<Rgb>& colours,
                     int width);

}  // namespace ovss
