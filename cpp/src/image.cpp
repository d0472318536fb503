// Image input policy and file reading (runtime/image.py).
#include "ovss/image.hpp"

#include <array>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <string>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "ovss/errors.hpp"

namespace ovss {
namespace {

std::string describe(const cv::Mat& m) {
    std::string s = std::to_string(m.rows) + "x" + std::to_string(m.cols) + "x" +
                    std::to_string(m.channels());
    return s + " (depth " + std::to_string(m.depth()) + ")";
}

using Size = std::pair<int64_t, int64_t>;  // (height, width)

uint32_t be(const unsigned char* p, int n) {
    uint32_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
    return v;
}

uint32_t le(const unsigned char* p, int n) {
    uint32_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

/// JPEG: walk the marker segments to the first SOFn frame header (APPn segments may precede it).
std::optional<Size> jpeg_size(std::ifstream& in) {
    in.seekg(2);
    for (int segments = 0; segments < 4096; ++segments) {
        int c = in.get();
        while (c == 0xFF) c = in.get();  // fill bytes
        if (c == EOF) return std::nullopt;
        const int marker = c;
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // no length
        unsigned char len[2];
        if (!in.read(reinterpret_cast<char*>(len), 2)) return std::nullopt;
        const uint32_t n = be(len, 2);
        const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
        if (sof) {
            unsigned char f[5];
            if (n < 7 || !in.read(reinterpret_cast<char*>(f), 5)) return std::nullopt;
            return Size{be(f + 1, 2), be(f + 3, 2)};
        }
        if (marker == 0xDA || marker == 0xD9 || n < 2) return std::nullopt;  // scan data before a frame
        in.seekg(n - 2, std::ios::cur);
    }
    return std::nullopt;
}

/// PNM (P1-P6): magic, then width and height as text, '#' comments between.
std::optional<Size> pnm_size(std::ifstream& in) {
    in.seekg(2);
    int64_t dims[2] = {0, 0};
    for (int64_t& d : dims) {
        int c = in.get();
        while (c == '#' || std::isspace(c)) {
            if (c == '#') while (c != '\n' && c != EOF) c = in.get();
            c = in.get();
        }
        if (!std::isdigit(c)) return std::nullopt;
        for (; std::isdigit(c) && d < (int64_t{1} << 40); c = in.get()) d = d * 10 + (c - '0');
    }
    return Size{dims[1], dims[0]};
}

}  // namespace

std::optional<Size> image_header_size(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::array<unsigned char, 32> h{};
    in.read(reinterpret_cast<char*>(h.data()), h.size());
    const std::streamsize n = in.gcount();
    in.clear();
    const unsigned char* p = h.data();
    if (n >= 24 && be(p, 4) == 0x89504E47u && std::string(reinterpret_cast<const char*>(p + 12), 4) == "IHDR")
        return Size{be(p + 20, 4), be(p + 16, 4)};
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return jpeg_size(in);
    if (n >= 10 && std::string(reinterpret_cast<const char*>(p), 4) == "GIF8") return Size{le(p + 8, 2), le(p + 6, 2)};
    if (n >= 26 && p[0] == 'B' && p[1] == 'M') {
        if (le(p + 14, 4) == 12) return Size{le(p + 20, 2), le(p + 18, 2)};  // BITMAPCOREHEADER
        const int32_t w = static_cast<int32_t>(le(p + 18, 4)), ht = static_cast<int32_t>(le(p + 22, 4));
        return Size{std::abs(static_cast<int64_t>(ht)), std::abs(static_cast<int64_t>(w))};
    }
    if (n >= 30 && std::string(reinterpret_cast<const char*>(p), 4) == "RIFF" &&
        std::string(reinterpret_cast<const char*>(p + 8), 4) == "WEBP") {
        const std::string chunk(reinterpret_cast<const char*>(p + 12), 4);
        if (chunk == "VP8 ") return Size{le(p + 28, 2) & 0x3FFF, le(p + 26, 2) & 0x3FFF};
        if (chunk == "VP8L") {
            const uint32_t b = le(p + 21, 4);
            return Size{((b >> 14) & 0x3FFF) + 1, (b & 0x3FFF) + 1};
        }
        if (chunk == "VP8X") return Size{le(p + 27, 3) + 1, le(p + 24, 3) + 1};
        return std::nullopt;
    }
    if (n >= 3 && p[0] == 'P' && p[1] >= '1' && p[1] <= '6' && std::isspace(p[2])) return pnm_size(in);
    return std::nullopt;
}

void check_pixel_count(int64_t h, int64_t w, int64_t max_pixels, const std::string& what) {
    if (max_pixels <= 0 || h <= 0 || w <= 0) return;
    if (h > max_pixels / w || h * w > max_pixels)
        throw ImageTooLargeError(what + " is " + std::to_string(w) + "x" + std::to_string(h) + " = " +
                                 std::to_string(h * w) + " pixels, over the limit of " + std::to_string(max_pixels) +
                                 " (--max-pixels N raises it; 0: no limit)");
}

void limit_decoder_pixels(int64_t max_pixels) {
    if (max_pixels > 0) ::setenv("OPENCV_IO_MAX_IMAGE_PIXELS", std::to_string(max_pixels).c_str(), 0);
}

cv::Mat as_rgb_uint8(const cv::Mat& image) {
    if (image.dims > 2)
        throw InvalidImageError("image must be HxW or HxWxC, got " + std::to_string(image.dims) + " dimensions");
    if (image.empty() || image.rows == 0 || image.cols == 0)
        throw InvalidImageError("image has an empty side: " + describe(image));
    if (image.depth() != CV_8U)
        throw InvalidImageError("image dtype must be uint8 (0..255), got " + describe(image) +
                                "; convert first, e.g. img.convertTo(out, CV_8U, 255) for floats in [0,1]");
    cv::Mat out;
    switch (image.channels()) {
        case 1: cv::cvtColor(image, out, cv::COLOR_GRAY2RGB); break;
        case 3: out = image.isContinuous() ? image : image.clone(); break;
        case 4: cv::cvtColor(image, out, cv::COLOR_RGBA2RGB); break;
        default:
            throw InvalidImageError("image must have 1, 3 or 4 channels (gray, RGB, RGBA), got " +
                                    std::to_string(image.channels()));
    }
    return out;
}

cv::Mat load_image(const std::filesystem::path& path, int64_t max_pixels) {
    if (std::filesystem::is_directory(path))
        throw InvalidImageError("image file '" + path.string() + "' is a folder, not an image");
    if (!std::filesystem::is_regular_file(path))
        throw InvalidImageError("image file '" + path.string() + "' does not exist");
    const std::string what = "image '" + path.string() + "'";
    if (const auto size = image_header_size(path)) check_pixel_count(size->first, size->second, max_pixels, what);
    cv::Mat raw;
    try {
        // UNCHANGED: no EXIF rotation and no silent 16-bit scaling, like Pillow.
        raw = cv::imread(path.string(), cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception& e) {
        throw InvalidImageError("cannot decode image '" + path.string() + "': " + e.what());
    }
    if (raw.empty()) throw InvalidImageError("cannot decode image '" + path.string() + "'");
    check_pixel_count(raw.rows, raw.cols, max_pixels, what);  // formats without a readable header
    if (raw.depth() != CV_8U)
        throw InvalidImageError("'" + path.string() + "' is a non-8-bit image (depth " +
                                std::to_string(raw.depth()) + ")");
    cv::Mat rgb;
    switch (raw.channels()) {
        case 1: cv::cvtColor(raw, rgb, cv::COLOR_GRAY2RGB); break;
        case 3: cv::cvtColor(raw, rgb, cv::COLOR_BGR2RGB); break;
        case 4: cv::cvtColor(raw, rgb, cv::COLOR_BGRA2RGB); break;
        default:
            throw InvalidImageError("'" + path.string() + "' has " + std::to_string(raw.channels()) +
                                    " channels");
    }
    return rgb;
}

}  // namespace ovss

namespace ovss {

void save_image_atomic(const std::filesystem::path& path, const cv::Mat& image) {
    namespace fs = std::filesystem;
    cv::Mat out = image;
    if (image.channels() == 3) cv::cvtColor(image, out, cv::COLOR_RGB2BGR);
    const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
    std::error_code ec;
    fs::create_directories(parent, ec);
    const fs::path tmp = parent / ("." + path.stem().string() + ".tmp" + path.extension().string());
    bool ok = false;
    try {
        ok = cv::imwrite(tmp.string(), out);
    } catch (const cv::Exception& e) {
        throw OvssError("cannot write '" + path.string() + "': " + e.what());
    }
    if (!ok) throw OvssError("cannot write '" + path.string() + "' (unknown suffix or unwritable folder)");
    fs::rename(tmp, path, ec);
    if (ec) {
        fs::remove(tmp, ec);
        throw OvssError("cannot write '" + path.string() + "'");
    }
}

}  // namespace ovss
