// Frame sources for the camera loop (runtime/sources.py): cameras, streams, GStreamer pipelines,
// video files, image folders and single images.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace ovss {

/// One captured frame: HxWx3 uint8 RGB, +1 per delivered frame (across reopenings), capture time.
struct Frame {
    cv::Mat image;
    int64_t seq = 0;
    double t_capture = 0;  ///< now_s() when read
};

/// How to open a source.
struct SourceCfg {
    std::string fourcc;      ///< camera pixel format to request, e.g. "MJPG" (empty: default)
    int width = 0, height = 0;  ///< camera capture size to request (0: default)
    int timeout_ms = 5000;   ///< open/read timeout for network streams
    /// Frames and images over this many pixels (H*W) are refused (0: no limit): a single image
    /// or a video/stream whose frame size is over it fails (SourceError); image folders skip
    /// such files, as undecodable ones.
    int64_t max_pixels = 50'000'000;
};

class FrameSource {
public:
    virtual ~FrameSource() = default;
    /// The next frame; nullopt at the end (finite) or on a failed read (live).
    virtual std::optional<Frame> read() = 0;
    /// Close and open again; throws SourceError when it cannot.
    virtual void reopen() = 0;
    virtual void close() = 0;

    std::string name;   ///< for logs and errors
    bool live = false;  ///< camera/stream: a failed read means reconnect; else the end
    double fps = 0;     ///< nominal frame rate, 0 when unknown
    int skipped = 0;    ///< files that could not be decoded (image folders)
};

/// Seconds on a monotonic clock.
double now_s();

/// Whether cv::getBuildInformation() lists ``feature`` (e.g. "GStreamer") as YES.
bool opencv_has(const std::string& feature);

/// Image files (by suffix, case-insensitive) directly in ``folder``, sorted by name.
std::vector<std::string> list_images(const std::string& folder);

/// Open ``spec``: INDEX | /dev/videoN | rtsp://... (and rtsps, rtmp, http(s), udp, tcp) |
/// gst:PIPELINE | a folder of images | an image file | a video file.
/// Throws SourceError: missing, cannot be opened, or needs a missing OpenCV feature.
std::unique_ptr<FrameSource> open_source(const std::string& spec, const SourceCfg& cfg = {});

}  // namespace ovss
