// Painter and sinks: VideoSink (atomic mp4v/MJPG), PNG folder, OpenCV window, null, tee.
#include "ovss/video_out.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <opencv2/highgui.hpp>
#include <opencv2/imgproc.hpp>

#include "ovss/errors.hpp"
#include "ovss/image.hpp"

namespace ovss {
namespace {

namespace fs = std::filesystem;

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

class PngFolderSink : public Sink {
public:
    explicit PngFolderSink(fs::path folder) : folder_(std::move(folder)) {
        std::error_code ec;
        fs::create_directories(folder_, ec);
        if (ec) throw SourceError("cannot create the output folder '" + folder_.string() + "': " + ec.message());
    }
    void write(const cv::Mat& rgb, const Frame& frame) override {
        char name[32];
        std::snprintf(name, sizeof(name), "frame_%06lld.png", static_cast<long long>(frame.seq));
        save_image_atomic(folder_ / name, rgb);
    }
    void close() override {}

private:
    fs::path folder_;
};

constexpr const char* kWindow = "ovss-edge";

class ShowSink : public Sink {
public:
    explicit ShowSink(StopFlag& stop) : stop_(stop) {
        const std::string message = "--show needs an OpenCV build with a GUI and a display; write --out instead";
        if (!std::getenv("DISPLAY") && !std::getenv("WAYLAND_DISPLAY")) throw ConfigError(message + " (no DISPLAY)");
        try {
            cv::namedWindow(kWindow, cv::WINDOW_NORMAL);
        } catch (const cv::Exception& e) {
            throw ConfigError(message + ": " + e.what());
        }
    }
    void write(const cv::Mat& rgb, const Frame&) override {
        cv::Mat bgr;
        cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
        cv::imshow(kWindow, bgr);
        const int key = cv::waitKey(1) & 0xFF;
        if (key == 'q' || key == 27) stop_.set();
    }
    void close() override { cv::destroyWindow(kWindow); }

private:
    StopFlag& stop_;
};

class NullSink : public Sink {
public:
    void write(const cv::Mat&, const Frame&) override {}
    void close() override {}
};

class TeeSink : public Sink {
public:
    explicit TeeSink(std::vector<std::unique_ptr<Sink>> sinks) : sinks_(std::move(sinks)) {}
    void write(const cv::Mat& rgb, const Frame& frame) override {
        for (auto& s : sinks_) s->write(rgb, frame);
    }
    void close() override { each(false); }
    void abort() override { each(true); }

private:
    void each(bool abort) {  // finish them all, then report the first failure
        std::exception_ptr first;
        for (auto& s : sinks_) {
            try {
                abort ? s->abort() : s->close();
            } catch (...) {
                if (!first) first = std::current_exception();
            }
        }
        if (first) std::rethrow_exception(first);
    }
    std::vector<std::unique_ptr<Sink>> sinks_;
};

}  // namespace

Painter::Painter(double alpha, bool with_legend, bool with_unknown)
    : alpha_(alpha), with_legend_(with_legend), with_unknown_(with_unknown) {
    if (!(alpha >= 0.0 && alpha <= 1.0)) throw ConfigError("alpha must be in [0, 1]");
}

cv::Mat Painter::operator()(const cv::Mat& rgb, const cv::Mat& labels, const std::vector<std::string>& classes) {
    if (classes != classes_) {
        classes_ = classes;
        colours_ = palette(static_cast<int>(classes.size()));
        strips_.clear();
    }
    cv::Mat shown = overlay(rgb, labels, colours_, alpha_);
    if (!with_legend_) return shown;
    auto it = strips_.find(rgb.cols);
    if (it == strips_.end()) {
        std::vector<std::string> names = classes_;
        std::vector<Rgb> colours = colours_;
        if (with_unknown_) names.push_back("unknown"), colours.push_back(kUnknownColour);
        it = strips_.emplace(rgb.cols, legend_strip(names, colours, rgb.cols)).first;
    }
    cv::vconcat(shown, it->second, shown);
    return shown;
}

VideoSink::VideoSink(fs::path path, double fps) : path_(std::move(path)), fps_(fps) {
    const std::string ext = lower(path_.extension().string());
    if (ext != ".mp4" && ext != ".avi")
        throw ConfigError("video output must end in .avi or .mp4: '" + path_.string() + "'");
    if (!(fps_ > 0)) throw ConfigError("fps must be > 0");
}

VideoSink::~VideoSink() {
    if (writer_.isOpened()) abort();
}

void VideoSink::write(const cv::Mat& rgb, const Frame&) {
    if (!writer_.isOpened()) {
        std::error_code ec;
        if (path_.has_parent_path()) fs::create_directories(path_.parent_path(), ec);
        // OpenCV picks the container by suffix, so the temp name keeps it.
        tmp_ = path_.parent_path() / ("." + path_.stem().string() + "." + std::to_string(getpid()) + ".tmp" +
                                      path_.extension().string());
        const bool mp4 = lower(path_.extension().string()) == ".mp4";
        const int fourcc = mp4 ? cv::VideoWriter::fourcc('m', 'p', '4', 'v') : cv::VideoWriter::fourcc('M', 'J', 'P', 'G');
        size_ = rgb.size();
        if (!writer_.open(tmp_.string(), fourcc, fps_, size_)) {
            fs::remove(tmp_, ec);
            throw SourceError("OpenCV cannot write '" + path_.string() + "' (" + std::to_string(size_.width) + "x" +
                              std::to_string(size_.height) + ")");
        }
    }
    cv::Mat bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    if (bgr.size() != size_) cv::resize(bgr, bgr, size_, 0, 0, cv::INTER_AREA);
    writer_.write(bgr);
    ++frames;
}

void VideoSink::close() {
    if (!writer_.isOpened()) {
        if (frames == 0) std::cerr << "warning: no frames: " << path_.string() << " not written\n";
        return;
    }
    writer_.release();
    std::error_code ec;
    fs::rename(tmp_, path_, ec);
    if (ec) {
        fs::remove(tmp_, ec);
        throw SourceError("cannot move the finished video to '" + path_.string() + "'");
    }
}

void VideoSink::abort() {
    if (!writer_.isOpened()) return;
    writer_.release();
    std::error_code ec;
    fs::remove(tmp_, ec);
}

std::unique_ptr<Sink> open_sink(const std::optional<std::string>& out, double fps, bool show, StopFlag& stop) {
    std::vector<std::unique_ptr<Sink>> sinks;
    if (out && fs::path(*out).has_extension() && !fs::is_directory(*out))
        sinks.push_back(std::make_unique<VideoSink>(*out, fps > 0 ? fps : kDefaultFps));
    else if (out)
        sinks.push_back(std::make_unique<PngFolderSink>(*out));
    if (show) sinks.push_back(std::make_unique<ShowSink>(stop));
    if (sinks.empty()) return std::make_unique<NullSink>();
    if (sinks.size() == 1) return std::move(sinks.front());
    return std::make_unique<TeeSink>(std::move(sinks));
}

}  // namespace ovss
