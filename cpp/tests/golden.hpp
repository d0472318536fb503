// Access to the golden files written by tests/cpp_golden.py (OVSS_GOLDEN_DIR).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace golden {

/// The golden folder, or empty when OVSS_GOLDEN_DIR is unset or has no index.json.
inline std::filesystem::path dir() {
    const char* env = std::getenv("OVSS_GOLDEN_DIR");
    if (!env || !std::filesystem::is_regular_file(std::filesystem::path(env) / "index.json")) return {};
    return env;
}

inline nlohmann::json index() {
    std::ifstream in(dir() / "index.json");
    return nlohmann::json::parse(in);
}

/// A PNG as stored, channels in RGB(A) order (gray stays single-channel): the caller's policy applies.
inline cv::Mat read_png_rgb(const std::filesystem::path& path) {
    cv::Mat raw = cv::imread(path.string(), cv::IMREAD_UNCHANGED), out;
    if (raw.channels() == 3) cv::cvtColor(raw, out, cv::COLOR_BGR2RGB);
    else if (raw.channels() == 4) cv::cvtColor(raw, out, cv::COLOR_BGRA2RGBA);
    else out = raw;
    return out;
}

}  // namespace golden

#define SKIP_WITHOUT_GOLDEN()                                                                  \
    if (golden::dir().empty()) GTEST_SKIP() << "OVSS_GOLDEN_DIR not set or empty: run "        \
                                               "python -m tests.cpp_golden --out DIR first"
