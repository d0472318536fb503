// Frame sources: cv::VideoCapture for cameras/streams/pipelines/videos, OpenCV imread for images.
#include "ovss/sources.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <regex>
#include <sstream>

#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "ovss/errors.hpp"
#include "ovss/image.hpp"

namespace ovss {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kImageSuffixes = {".png", ".jpg", ".jpeg", ".bmp", ".tif",
                                                  ".tiff", ".webp", ".ppm", ".pgm"};
const std::vector<std::string> kStreamSchemes = {"rtsp://", "rtsps://", "rtmp://", "http://",
                                                  "https://", "udp://", "tcp://"};

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

bool is_image_file(const fs::path& p) {
    const std::string ext = lower(p.extension().string());
    return std::find(kImageSuffixes.begin(), kImageSuffixes.end(), ext) != kImageSuffixes.end();
}

cv::Mat bgr_to_rgb(const cv::Mat& image) {
    cv::Mat rgb;
    if (image.channels() == 1) cv::cvtColor(image, rgb, cv::COLOR_GRAY2RGB);
    else if (image.channels() == 4) cv::cvtColor(image, rgb, cv::COLOR_BGRA2RGB);
    else cv::cvtColor(image, rgb, cv::COLOR_BGR2RGB);
    return rgb;
}

/// A cv::VideoCapture: camera index, stream URL, GStreamer pipeline or video file.
class CaptureSource : public FrameSource {
public:
    CaptureSource(std::string target, int index, int api, std::string label, bool is_live,
                  std::vector<int> params, std::optional<SourceCfg> cfg)
        : target_(std::move(target)), index_(index), api_(api), params_(std::move(params)), cfg_(std::move(cfg)) {
        name = std::move(label);
        live = is_live;
        max_pixels_ = cfg_ ? cfg_->max_pixels : kDefaultMaxPixels;
        open();
        const double f = cap_.get(cv::CAP_PROP_FPS);
        fps = std::isfinite(f) && f > 0 && f < 1000 ? f : 0;
        const double n = cap_.get(cv::CAP_PROP_FRAME_COUNT);
        frame_count = std::isfinite(n) && n > 0 ? static_cast<int64_t>(n) : 0;
    }

    std::optional<Frame> read() override {
        cv::Mat image;
        if (!cap_.read(image) || image.empty()) return std::nullopt;
        check_pixel_count(image.rows, image.cols, max_pixels_, name + " frame");
        return Frame{bgr_to_rgb(image), seq_++, now_s()};
    }

    void reopen() override {
        cap_.release();
        open();
    }

    void close() override { cap_.release(); }

    int64_t frame_count = 0;

private:
    void open() {
        const bool ok = index_ >= 0 ? cap_.open(index_, api_, params_) : cap_.open(target_, api_, params_);
        if (!ok || !cap_.isOpened()) {
            cap_.release();
            throw SourceError("cannot open " + name);
        }
        const double w = cap_.get(cv::CAP_PROP_FRAME_WIDTH), h = cap_.get(cv::CAP_PROP_FRAME_HEIGHT);
        try {  // the frame size the source announces, before a frame is decoded
            if (w > 0 && h > 0 && w < 1e9 && h < 1e9)
                check_pixel_count(static_cast<int64_t>(h), static_cast<int64_t>(w), max_pixels_, name + " frame");
        } catch (const ImageTooLargeError& e) {
            cap_.release();
            throw SourceError(e.what());
        }
        if (!cfg_) return;
        if (cfg_->fourcc.size() == 4) {
            const std::string& f = cfg_->fourcc;
            cap_.set(cv::CAP_PROP_FOURCC, cv::VideoWriter::fourcc(f[0], f[1], f[2], f[3]));
        }
        if (cfg_->width) cap_.set(cv::CAP_PROP_FRAME_WIDTH, cfg_->width);
        if (cfg_->height) cap_.set(cv::CAP_PROP_FRAME_HEIGHT, cfg_->height);
    }

    std::string target_;
    int index_, api_;
    std::vector<int> params_;
    std::optional<SourceCfg> cfg_;
    int64_t max_pixels_ = kDefaultMaxPixels;
    cv::VideoCapture cap_;
    int64_t seq_ = 0;
};

/// Image files in the given order; files that fail to decode are logged and skipped.
class ImageFilesSource : public FrameSource {
public:
    ImageFilesSource(std::vector<std::string> paths, std::string label, int64_t max_pixels)
        : paths_(std::move(paths)), max_pixels_(max_pixels) {
        name = std::move(label);
    }

    std::optional<Frame> read() override {
        while (next_ < paths_.size()) {
            const std::string& path = paths_[next_++];
            try {
                return Frame{load_image(path, max_pixels_), seq_++, now_s()};
            } catch (const InvalidImageError& e) {
                ++skipped;
                std::cerr << "warning: skipping unreadable image " << path << ": " << e.what() << "\n";
            }
        }
        return std::nullopt;
    }

    void reopen() override { throw SourceError(name + " is finite and cannot be reopened"); }
    void close() override { next_ = paths_.size(); }

private:
    std::vector<std::string> paths_;
    int64_t max_pixels_;
    size_t next_ = 0;
    int64_t seq_ = 0;
};

std::unique_ptr<FrameSource> camera(int index, const std::string& spec, const SourceCfg& cfg) {
    return std::make_unique<CaptureSource>("", index, cv::CAP_V4L2, "camera '" + spec + "'", true,
                                           std::vector<int>{}, cfg);
}

std::unique_ptr<FrameSource> stream(const std::string& url, const SourceCfg& cfg) {
    std::vector<int> params = {cv::CAP_PROP_OPEN_TIMEOUT_MSEC, cfg.timeout_ms, cv::CAP_PROP_READ_TIMEOUT_MSEC,
                               cfg.timeout_ms};
    SourceCfg limits;
    limits.max_pixels = cfg.max_pixels;
    auto source = std::make_unique<CaptureSource>(url, -1, cv::CAP_FFMPEG, "stream '" + url + "'", true,
                                                  params, limits);
    // A file served over http(s) has a frame count and an end: replaying it forever is wrong.
    if (source->frame_count > 0 && lower(url).rfind("http", 0) == 0) source->live = false;
    return source;
}

std::unique_ptr<FrameSource> gstreamer(const std::string& pipeline, const SourceCfg& cfg) {
    if (pipeline.find_first_not_of(' ') == std::string::npos)
        throw SourceError("gst: needs a pipeline after the prefix, ending in appsink");
    if (!opencv_has("GStreamer"))
        throw SourceError("this OpenCV " CV_VERSION " build has no GStreamer support (cv::getBuildInformation() "
                          "shows 'GStreamer: NO'); use an OpenCV built with GStreamer, e.g. JetPack's");
    SourceCfg limits;
    limits.max_pixels = cfg.max_pixels;
    return std::make_unique<CaptureSource>(pipeline, -1, cv::CAP_GSTREAMER, "GStreamer pipeline '" + pipeline + "'",
                                           true, std::vector<int>{}, limits);
}

std::unique_ptr<FrameSource> folder(const std::string& path, int64_t max_pixels) {
    auto files = list_images(path);
    if (files.empty()) throw SourceError("image folder '" + path + "' has no image files");
    return std::make_unique<ImageFilesSource>(std::move(files), "image folder '" + path + "'", max_pixels);
}

}  // namespace

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool opencv_has(const std::string& feature) {
    std::istringstream info(cv::getBuildInformation());
    const std::regex pattern("^\\s*" + feature + ":\\s*(.*)$");
    std::string line;
    std::smatch m;
    while (std::getline(info, line))
        if (std::regex_match(line, m, pattern)) return lower(m[1].str()).rfind("yes", 0) == 0;
    return false;
}

std::vector<std::string> list_images(const std::string& dir) {
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(dir))
        if (entry.is_regular_file() && is_image_file(entry.path())) files.push_back(entry.path().string());
    std::sort(files.begin(), files.end());
    return files;
}

std::unique_ptr<FrameSource> open_source(const std::string& raw_spec, const SourceCfg& cfg) {
    const size_t a = raw_spec.find_first_not_of(" \t"), b = raw_spec.find_last_not_of(" \t");
    const std::string spec = a == std::string::npos ? "" : raw_spec.substr(a, b - a + 1);
    if (cfg.max_pixels < 0) throw ConfigError("max_pixels must be >= 0 (0: no limit)");
    if (spec.rfind("gst:", 0) == 0) return gstreamer(spec.substr(4), cfg);
    if (!spec.empty() && std::all_of(spec.begin(), spec.end(), ::isdigit)) return camera(std::stoi(spec), spec, cfg);
    std::smatch m;
    if (std::regex_match(spec, m, std::regex("^/dev/video(\\d+)$"))) {
        if (!fs::exists(spec)) throw SourceError("camera device '" + spec + "' does not exist (is the camera plugged in?)");
        return camera(std::stoi(m[1].str()), spec, cfg);
    }
    for (const std::string& scheme : kStreamSchemes)
        if (lower(spec).rfind(scheme, 0) == 0) return stream(spec, cfg);
    const fs::path path(spec);
    if (fs::is_directory(path)) return folder(spec, cfg.max_pixels);
    if (fs::is_regular_file(path)) {
        if (is_image_file(path)) {
            // one image: over the limit is an error now, not a skipped frame
            if (const auto size = image_header_size(path)) {
                try {
                    check_pixel_count(size->first, size->second, cfg.max_pixels, "image '" + spec + "'");
                } catch (const ImageTooLargeError& e) {
                    throw SourceError(e.what());
                }
            }
            return std::make_unique<ImageFilesSource>(std::vector<std::string>{spec}, "image '" + spec + "'",
                                                      cfg.max_pixels);
        }
        SourceCfg limits;
        limits.max_pixels = cfg.max_pixels;
        return std::make_unique<CaptureSource>(spec, -1, cv::CAP_FFMPEG, "video file '" + spec + "'", false,
                                               std::vector<int>{}, limits);
    }
    if (spec.find('/') != std::string::npos || path.has_extension())
        throw SourceError("source file or folder '" + spec + "' does not exist");
    throw SourceError("source '" + spec + "' is not a camera index, /dev/videoN, stream URL, gst: pipeline, "
                      "or an existing file or folder");
}

}  // namespace ovss
