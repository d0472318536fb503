// Reads back what the ctest camera run wrote: the stats JSON and the mp4 (frame count and size).
//   ovss_camera_check STATS.json OUT.mp4 EXPECTED_FRAMES
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>
#include <opencv2/videoio.hpp>

int main(int argc, char** argv) {
    if (argc != 4) {
        std::cerr << "usage: ovss_camera_check STATS.json OUT.mp4 EXPECTED_FRAMES\n";
        return 2;
    }
    const int expected = std::stoi(argv[3]);
    std::ifstream in(argv[1]);
    if (!in) return std::cerr << "FAIL: no stats file " << argv[1] << "\n", 1;
    const auto stats = nlohmann::json::parse(in);
    int failures = 0;
    auto check = [&](bool ok, const std::string& what) {
        if (!ok) std::cerr << "FAIL: " << what << "\n", ++failures;
    };
    check(stats["frames_processed"] == expected, "frames_processed == " + std::to_string(expected));
    check(stats["stop_reason"] == "max_frames", "stop_reason == max_frames");
    check(stats["frames_dropped"] == 0, "no drops for a file source");
    check(!stats["latency_p50_ms"].is_null() && !stats["latency_p90_ms"].is_null(), "latency percentiles");
    cv::VideoCapture cap(argv[2]);
    check(cap.isOpened(), std::string("video opens: ") + argv[2]);
    int frames = 0;
    cv::Mat frame;
    while (cap.read(frame)) ++frames;
    check(frames == expected, "video has " + std::to_string(frames) + " frames, expected " + std::to_string(expected));
    check(frame.empty() || frame.cols == 128, "frame width 128");
    std::cout << "camera output: " << frames << " frames, stats " << stats.dump() << "\n";
    return failures ? 1 : 0;
}
