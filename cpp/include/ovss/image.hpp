// Image input policy (runtime/image.py): uint8 only; gray replicated; RGBA alpha dropped.
#pragma once

#include <filesystem>

#include <opencv2/core.hpp>

namespace ovss {

/// Validate an image and return it as a contiguous HxWx3 uint8 RGB Mat.
///
/// Args: image: CV_8UC1 (gray, replicated), CV_8UC3 (RGB) or CV_8UC4 (RGBA, alpha dropped),
///   channels already in RGB order.
/// Throws InvalidImageError: empty, not 8-bit, or another channel count.
cv::Mat as_rgb_uint8(const cv::Mat& image);

/// Read an image file (anything OpenCV decodes) as HxWx3 uint8 RGB.
/// Throws InvalidImageError: missing, undecodable, or not 8-bit.
cv::Mat load_image(const std::filesystem::path& path);

}  // namespace ovss

namespace ovss {

/// Write an image atomically (temp file in the same folder, then rename). ``image`` is RGB
/// (CV_8UC3) or single-channel; the format follows the suffix (.png, .jpg, ...).
/// Throws OvssError when it cannot be encoded or written.
void save_image_atomic(const std::filesystem::path& path, const cv::Mat& image);

}  // namespace ovss
