// Where the camera loop's frames go (runtime/video_out.py): the overlay painter and the sinks.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/videoio.hpp>

#include "ovss/capture.hpp"
#include "ovss/postprocess.hpp"
#include "ovss/sources.hpp"

namespace ovss {

inline constexpr double kDefaultFps = 30.0;

/// Colour overlay plus an optional legend strip listing every class (so the height is fixed),
/// and "unknown" after them when ``with_unknown`` (a score threshold is on; those pixels are
/// left unblended).
class Painter {
public:
    Painter(double alpha, bool with_legend, bool with_unknown = false);
    /// HxWx3 RGB + CV_32S labels -> (H + legend)xWx3 RGB.
    cv::Mat operator()(const cv::Mat& rgb, const cv::Mat& labels, const std::vector<std::string>& classes);

private:
    double alpha_;
    bool with_legend_, with_unknown_;
    std::vector<std::string> classes_;  ///< the vocabulary the caches below were made for
    std::vector<Rgb> colours_;
    std::map<int, cv::Mat> strips_;     ///< legend strip per width
};

class Sink {
public:
    virtual ~Sink() = default;
    /// Take one rendered HxWx3 uint8 RGB image made from ``frame``.
    virtual void write(const cv::Mat& rgb, const Frame& frame) = 0;
    /// Flush and release; the output is complete after this returns.
    virtual void close() = 0;
    /// Drop unfinished output (the loop failed); defaults to close().
    virtual void abort() { close(); }
};

/// A video file (.mp4: mp4v, .avi: MJPG) opened at the first frame's size, written to a hidden
/// temp file and renamed on close, so the path only ever holds a complete video.
class VideoSink : public Sink {
public:
    VideoSink(std::filesystem::path path, double fps);
    ~VideoSink() override;
    void write(const cv::Mat& rgb, const Frame& frame) override;
    void close() override;
    void abort() override;
    int frames = 0;

private:
    std::filesystem::path path_, tmp_;
    double fps_;
    cv::VideoWriter writer_;
    cv::Size size_;
};

/// Opens the sinks for ``--out`` (video by suffix, else a PNG folder) and ``--show``; never null
/// (a sink that discards when neither is given).
std::unique_ptr<Sink> open_sink(const std::optional<std::string>& out, double fps, bool show, StopFlag& stop);

}  // namespace ovss
