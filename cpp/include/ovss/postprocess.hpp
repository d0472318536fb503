// Logits to label maps and colour overlays (runtime/postprocess.py).
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

/// Argmax over classes of bilinearly upsampled logits, in float64; ties -> the first class.
///
/// Args: logits: float32 [C,h,w]; out_h, out_w: output size; span_h, span_w: the size the
///   logits span (the padded size in slide mode, else out_h, out_w).
/// background_thd: in [0, 1); pixels whose top softmax probability over the upsampled logits is
///   below it get class 0 (SCLIP / ClearCLIP / NACLIP ``prob_thd``); 0 = off.
/// Returns: CV_32S out_h x out_w class indices in [0, C).
cv::Mat upsample_argmax(const Tensor& logits, int out_h, int out_w, double span_h, double span_w,
                        double background_thd = 0.0);

using Rgb = std::array<uint8_t, 3>;

/// Deterministic colours, one per class (PASCAL VOC bit pattern).
std::vector<Rgb> palette(int num_classes);

/// clip((1 - alpha) * image + alpha * colour + 0.5) in float32, truncated to uint8.
/// Args: rgb: HxWx3 uint8; labels: CV_32S HxW in [0, colours.size()); alpha in [0, 1].
cv::Mat overlay(const cv::Mat& rgb, const cv::Mat& labels, const std::vector<Rgb>& colours,
                double alpha);

/// A white strip (OpenCV text) listing ``names`` with their colour swatches, ``width`` wide.
cv::Mat legend_strip(const std::vector<std::string>& names, const std::vector<Rgb>& colours,
                     int width);

}  // namespace ovss
