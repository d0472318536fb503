// Palette-mode label PNGs (runtime/postprocess.label_png): pixel values are the class indices
// exactly, the palette makes the file viewable. OpenCV cannot write palette PNGs, so this uses
// libpng where the build found it (OVSS_HAVE_LIBPNG), else a minimal writer of its own (zlib
// compression where found, else stored deflate blocks).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <vector>

#include <opencv2/core.hpp>

#include "ovss/postprocess.hpp"

namespace ovss {

using Palette256 = std::array<Rgb, 256>;

/// The label PNG's palette: ``colours`` first, index 255 kUnknownColour when there are at most
/// 255 classes, black elsewhere. Throws ConfigError for more than 256 colours.
Palette256 label_palette(const std::vector<Rgb>& colours);

/// An 8-bit palette PNG (colour type 3, 256 PLTE entries) of ``indices`` (CV_8U HxW).
std::vector<uint8_t> encode_palette_png(const cv::Mat& indices, const Palette256& palette);
/// The same with the runtime's own minimal encoder (used when libpng is not found; public for
/// tests): one IDAT, filter "none", zlib-compressed where built with zlib unless ``stored``.
std::vector<uint8_t> encode_palette_png_minimal(const cv::Mat& indices, const Palette256& palette,
                                                bool stored = false);
/// Whether encode_palette_png uses libpng.
bool png_uses_libpng();

/// Write ``labels`` (CV_32S HxW, values in [0, colours.size()) or 255 = unknown) as a palette
/// PNG with label_palette(colours), atomically (temp file, then rename).
/// Throws ConfigError: more than 256 classes or a label out of range; OvssError: not writable.
void write_label_png(const std::filesystem::path& path, const cv::Mat& labels, const std::vector<Rgb>& colours);

/// Write ``bytes`` to ``path`` atomically (temp file in the same folder, then rename).
void write_file_atomic(const std::filesystem::path& path, const std::vector<uint8_t>& bytes);

}  // namespace ovss
