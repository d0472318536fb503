// Resize (Pillow-identical bilinear) and normalisation of RGB uint8 images into model inputs.
#pragma once

#include <utility>

#include <opencv2/core.hpp>

#include "ovss/manifest.hpp"
#include "ovss/tensor.hpp"

namespace ovss {

/// Pillow's ``Image.resize((w, h), Image.BILINEAR)`` on uint8 data, byte for byte: a separable
/// triangle filter whose support widens with the downscale factor, 22-bit fixed-point weights,
/// horizontal pass then vertical, each rounded and clipped to uint8.
///
/// Args: image: CV_8UC1..CV_8UC4, HxW > 0; out_h, out_w > 0.
/// Returns: CV_8UC(n) out_h x out_w (a copy when the size is unchanged).
cv::Mat resize_bilinear_pillow(const cv::Mat& image, int out_h, int out_w);

/// (H, W) scaled, aspect kept, so that min(H, W) == short_side (Python's round: half to even).
std::pair<int, int> short_side_size(int h, int w, int short_side);

/// ``resize_bilinear_pillow`` of HxWx3 RGB, returning ``rgb`` itself when the size matches.
cv::Mat resize_rgb(const cv::Mat& rgb, int out_h, int out_w);

/// HxWx3 uint8 RGB -> float32 [1,3,H,W] with ``(x - mean) * (1/std)`` in float32.
Tensor normalize(const cv::Mat& rgb, const PreprocessCfg& cfg);

/// Like ``normalize`` but into the top-left HxW of ``dst`` [1,3,Hp,Wp] (Hp >= H, Wp >= W).
void normalize_into(const cv::Mat& rgb, const PreprocessCfg& cfg, Tensor& dst);

}  // namespace ovss
