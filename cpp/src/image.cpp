// Image input policy and file reading (runtime/image.py).
#include "ovss/image.hpp"

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

}  // namespace

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

cv::Mat load_image(const std::filesystem::path& path) {
    if (!std::filesystem::is_regular_file(path))
        throw InvalidImageError("image file '" + path.string() + "' does not exist");
    cv::Mat raw;
    try {
        // UNCHANGED: no EXIF rotation and no silent 16-bit scaling, like Pillow.
        raw = cv::imread(path.string(), cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception& e) {
        throw InvalidImageError("cannot decode image '" + path.string() + "': " + e.what());
    }
    if (raw.empty()) throw InvalidImageError("cannot decode image '" + path.string() + "'");
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
