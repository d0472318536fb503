// Image input policy (runtime/image.py): uint8 only; gray replicated; RGBA alpha dropped.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>

#include <opencv2/core.hpp>

namespace ovss {

/// Validate an image and return it as a contiguous HxWx3 uint8 RGB Mat.
///
/// Args: image: CV_8UC1 (gray, replicated), CV_8UC3 (RGB) or CV_8UC4 (RGBA, alpha dropped),
///   channels already in RGB order.
/// Throws InvalidImageError: empty, not 8-bit, or another channel count.
cv::Mat as_rgb_uint8(const cv::Mat& image);

/// The default limit on a decoded image's pixel count (H*W), as runtime/image.py's
/// DEFAULT_MAX_PIXELS; the programs' ``--max-pixels N`` changes it (0: no limit).
inline constexpr int64_t kDefaultMaxPixels = 50'000'000;

/// (height, width) from the file's header, read without decoding: PNG, JPEG, GIF, BMP, WebP and
/// PNM (PPM/PGM/PBM); nullopt for other formats or a header it cannot read.
std::optional<std::pair<int64_t, int64_t>> image_header_size(const std::filesystem::path& path);

/// Refuse an image of ``h`` x ``w`` pixels over ``max_pixels`` (0: no limit); ``what`` names it.
/// Throws ImageTooLargeError.
void check_pixel_count(int64_t h, int64_t w, int64_t max_pixels, const std::string& what);

/// Make OpenCV's own decoders refuse images over ``max_pixels`` too (OPENCV_IO_MAX_IMAGE_PIXELS,
/// unless already set), for formats image_header_size cannot read. Call before the first decode;
/// 0 leaves OpenCV's default.
void limit_decoder_pixels(int64_t max_pixels);

/// Read an image file (anything OpenCV decodes) as HxWx3 uint8 RGB.
/// Refused: more than ``max_pixels`` pixels (0: no limit), from the header BEFORE anything is
/// allocated or decoded where the format allows (ImageTooLargeError).
/// Throws InvalidImageError: missing, not a regular file, undecodable, or not 8-bit.
cv::Mat load_image(const std::filesystem::path& path, int64_t max_pixels = kDefaultMaxPixels);

}  // namespace ovss

namespace ovss {

/// Write an image atomically (temp file in the same folder, then rename). ``image`` is RGB
/// (CV_8UC3) or single-channel; the format follows the suffix (.png, .jpg, ...).
/// Throws OvssError when it cannot be encoded or written.
void save_image_atomic(const std::filesystem::path& path, const cv::Mat& image);

}  // namespace ovss
