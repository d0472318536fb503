// Resize (OpenCV INTER_LINEAR) and normalisation of RGB uint8 images into model inputs.
#pragma once

#include <utility>

#include <opencv2/core.hpp>

#include "ovss/manifest.hpp"
#include "ovss/tensor.hpp"

namespace ovss {

/// ``cv::resize(image, {out_w, out_h}, 0, 0, cv::INTER_LINEAR)``: the one resize of training,
/// evaluation and both runtimes (the Python runtime's ``resize_rgb`` gives the same bytes, with
/// or without OpenCV). Half-pixel centres, 11-bit fixed-point weights, edge pixels repeated.
///
/// Args: image: CV_8UC1..CV_8UC4, HxW > 0; out_h, out_w > 0.
/// Returns: CV_8UC(n) out_h x out_w (a new image, also when the size is unchanged).
cv::Mat resize_bilinear(const cv::Mat& image, int out_h, int out_w);

/// (H, W) scaled, aspect kept, so that min(H, W) == short_side; sides round half up, as the
/// evaluation's ``eval_size`` (``int(x + 0.5)``).
std::pair<int, int> short_side_size(int h, int w, int short_side);

/// ``resize_bilinear`` of HxWx3 RGB, returning ``rgb`` itself when the size matches.
cv::Mat resize_rgb(const cv::Mat& rgb, int out_h, int out_w);

/// HxWx3 uint8 RGB -> float32 [1,3,H,W] with ``(x - mean) * (1/std)`` in float32.
Tensor normalize(const cv::Mat& rgb, const PreprocessCfg& cfg);

/// Like ``normalize`` but into the top-left HxW of ``dst`` [1,3,Hp,Wp] (Hp >= H, Wp >= W).
void normalize_into(const cv::Mat& rgb, const PreprocessCfg& cfg, Tensor& dst);

}  // namespace ovss
