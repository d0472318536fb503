// Unit tests that need no golden files: windows (grid and flush plans, stitching, mask logits),
// taps, palette, overlay, npy, sha256, image policy, queue, ring, argument parsing.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "ovss/capture.hpp"
#include "ovss/cli.hpp"
#include "ovss/errors.hpp"
#include "ovss/image.hpp"
#include "ovss/label_map.hpp"
#include "ovss/manifest.hpp"
#include "ovss/npy.hpp"
#include "ovss/postprocess.hpp"
#include "ovss/preprocess.hpp"
#include "ovss/sha256.hpp"
#include "ovss/windows.hpp"

namespace fs = std::filesystem;
using namespace ovss;

TEST(Windows, PlanMatchesPython) {
    // python: plan_windows((300, 410), 224, default_stride(224, 16), 16)
    const WindowPlan plan = plan_windows(300, 410, 224, default_stride(224, 16), 16);
    EXPECT_EQ(default_stride(224, 16), 144);
    EXPECT_EQ(default_stride(448, 16), 288);
    EXPECT_EQ(plan.padded_h, 304);
    EXPECT_EQ(plan.padded_w, 416);
    const std::vector<std::pair<int, int>> want = {{0, 0}, {0, 144}, {0, 192}, {80, 0}, {80, 144}, {80, 192}};
    EXPECT_EQ(plan.boxes, want);
}

TEST(Windows, SmallImageIsPaddedToOneWindow) {
    const WindowPlan plan = plan_windows(100, 60, 224, 144, 16);
    EXPECT_EQ(plan.padded_h, 224);
    EXPECT_EQ(plan.padded_w, 224);
    EXPECT_EQ(plan.boxes.size(), 1u);
    EXPECT_THROW(plan_windows(100, 100, 100, 50, 16), ConfigError);
}

TEST(Windows, StitchAveragesOverlaps) {
    const WindowPlan plan = plan_windows(16, 32, 16, 8, 8);  // windows at x = 0, 8, 16
    Tensor padded = Tensor::zeros({1, 3, plan.padded_h, plan.padded_w});
    float next = 1.0f;
    const Tensor out = stitch(plan, padded, [&](const Tensor&) {
        Tensor t = Tensor::zeros({1, 2, 2});
        for (float& v : t.data) v = next;
        next += 1.0f;
        return t;
    });
    ASSERT_EQ(out.shape, (std::vector<int64_t>{1, 2, 4}));
    EXPECT_FLOAT_EQ(out.data[0], 1.0f);   // only window 1
    EXPECT_FLOAT_EQ(out.data[1], 1.5f);   // windows 1 and 2
    EXPECT_FLOAT_EQ(out.data[2], 2.5f);   // windows 2 and 3
    EXPECT_FLOAT_EQ(out.data[3], 3.0f);   // only window 3
}

TEST(Windows, FlushPlanMatchesPython) {
    // python: plan_windows((300, 410), 224, stride, 16, "flush"): stride not rounded to the grid
    const WindowPlan a = plan_windows(300, 410, 224, 144, 16, SlideEdge::Flush);
    EXPECT_EQ(a.padded_h, 300);
    EXPECT_EQ(a.padded_w, 410);
    EXPECT_EQ(a.canvas_h(), 300);
    const std::vector<std::pair<int, int>> want_a = {{0, 0}, {0, 144}, {0, 186}, {76, 0}, {76, 144}, {76, 186}};
    EXPECT_EQ(a.boxes, want_a);
    const WindowPlan b = plan_windows(300, 410, 224, 100, 16, SlideEdge::Flush);
    const std::vector<std::pair<int, int>> want_b = {{0, 0}, {0, 100}, {0, 186}, {76, 0}, {76, 100}, {76, 186}};
    EXPECT_EQ(b.boxes, want_b);
    // Smaller than the window in one dimension: padded up to it there only.
    const WindowPlan c = plan_windows(100, 260, 224, 150, 16, SlideEdge::Flush);
    EXPECT_EQ(c.padded_h, 224);
    EXPECT_EQ(c.padded_w, 260);
    EXPECT_EQ(c.boxes, (std::vector<std::pair<int, int>>{{0, 0}, {0, 36}}));
    EXPECT_EQ(window_starts(224, 224, 100), std::vector<int>{0});
    EXPECT_EQ(window_starts(10, 4, 3), (std::vector<int>{0, 3, 6}));
    EXPECT_EQ(window_starts(11, 4, 3), (std::vector<int>{0, 3, 6, 7}));
    EXPECT_THROW(plan_windows(300, 410, 224, 0, 16, SlideEdge::Flush), ConfigError);
    EXPECT_EQ(parse_slide_edge("grid"), SlideEdge::Grid);
    EXPECT_THROW(parse_slide_edge("edge"), ConfigError);
}

TEST(Windows, UpsampleMatchesPythonBitForBit) {
    // python: runtime.label_map.upsample(s, (3, 5)) for s = [[[0.3, -1.7, 2.2], [0.1, 0.9, -0.4]]]
    const Tensor s{{1, 2, 3}, {0.3f, -1.7f, 2.2f, 0.1f, 0.9f, -0.4f}};
    const Tensor u = upsample_bilinear(s, 3, 5);
    const std::vector<float> want = {
        0x1.333334p-2f, -0x1p-1f,        -0x1.b33334p+0f, 0x1.47ae16p-1f, 0x1.19999ap+1f,
        0x1.99999ap-3f, -0x1.47ae18p-5f, -0x1.99999cp-2f, 0x1.851eb8p-2f, 0x1.cccccep-1f,
        0x1.99999ap-4f, 0x1.ae147ap-2f,  0x1.ccccccp-1f,  0x1.eb8518p-4f, -0x1.99999ap-2f};
    ASSERT_EQ(u.shape, (std::vector<int64_t>{1, 3, 5}));
    EXPECT_EQ(u.data, want);
}

TEST(Windows, FlushStitchAveragesAtFullResolution) {
    const WindowPlan plan = plan_windows(4, 6, 4, 2, 2, SlideEdge::Flush);  // windows at x = 0, 2
    ASSERT_EQ(plan.boxes, (std::vector<std::pair<int, int>>{{0, 0}, {0, 2}}));
    float next = 1.0f;
    const Tensor out = stitch(plan, [&](int, int) {
        Tensor t = Tensor::zeros({1, 2, 2});
        for (float& v : t.data) v = next;
        next += 2.0f;
        return t;
    });
    ASSERT_EQ(out.shape, (std::vector<int64_t>{1, 4, 6}));
    const std::vector<float> row = {1.0f, 1.0f, 2.0f, 2.0f, 3.0f, 3.0f};
    for (int y = 0; y < 4; ++y)
        EXPECT_EQ(std::vector<float>(out.data.begin() + y * 6, out.data.begin() + y * 6 + 6), row) << "row " << y;
}

TEST(Windows, MaskLogitsAreUpsampledBeforeTheSigmoid) {
    // Window mask logits (2 classes, 2x2 cells) upsampled to 4x4: along x, taps at 0, 0.25, 0.75,
    // 1 give u = a + (b - a) * {0, 1/4, 3/4, 1} (exact here), the same in every row. Then
    // p = sigmoid(u) - bias, averaged over the two windows at x = 0 and 2 of a 4x6 image.
    const float a[2] = {0.0f, -2.0f}, b[2] = {4.0f, 2.0f}, bias[2] = {0.1f, 0.0f};
    const WindowPlan plan = plan_windows(4, 6, 4, 2, 2, SlideEdge::Flush);
    const Tensor out = stitch(
        plan,
        [&](int, int) {
            return Tensor{{2, 2, 2}, {a[0], b[0], a[0], b[0], a[1], b[1], a[1], b[1]}};
        },
        sigmoid_upsample({bias[0], bias[1]}));
    ASSERT_EQ(out.shape, (std::vector<int64_t>{2, 4, 6}));
    const double frac[4] = {0.0, 0.25, 0.75, 1.0};
    for (int c = 0; c < 2; ++c) {
        const auto p = [&](int x) { return 1.0 / (1.0 + std::exp(-(a[c] + (b[c] - a[c]) * frac[x]))) - bias[c]; };
        const double want[6] = {p(0), p(1), (p(2) + p(0)) / 2, (p(3) + p(1)) / 2, p(2), p(3)};
        for (int y = 0; y < 4; ++y)
            for (int x = 0; x < 6; ++x) EXPECT_NEAR(out.data[(c * 4 + y) * 6 + x], want[x], 1e-6) << c << y << x;
    }
    // Sigmoid first would give 0.75 sigmoid(0) + 0.25 sigmoid(4) = 0.62 at class 0, x = 1, not 0.73.
    EXPECT_NEAR(out.data[1], 1.0 / (1.0 + std::exp(-1.0)) - 0.1, 1e-6);
    EXPECT_THROW(stitch(plan, [&](int, int) { return Tensor::zeros({3, 2, 2}); }, sigmoid_upsample({0.1f, 0.2f})),
                 ModelFolderError);
}

TEST(Postprocess, TapsMatchAlignCornersFalse) {
    const BilinearTaps t = bilinear_taps(4, 2, 4);  // src = (i + 0.5) / 2 - 0.5
    EXPECT_EQ(t.i0, (std::vector<int>{0, 0, 0, 1}));
    EXPECT_DOUBLE_EQ(t.w0[0], 1.0);  // clipped to 0
    EXPECT_DOUBLE_EQ(t.w0[1], 0.75);
    EXPECT_DOUBLE_EQ(t.w1[1], 0.25);
    EXPECT_DOUBLE_EQ(t.w0[3], 1.0);  // clipped to the last cell: one merged tap
    EXPECT_DOUBLE_EQ(t.w1[3], 0.0);
}

namespace {

/// The reference labels of ``logits`` at h x w (span = output size).
cv::Mat exact_labels(const Tensor& logits, int h, int w, double background_thd = 0.0) {
    LabelOptions o;
    o.method = LabelMethod::Exact;
    o.background_thd = background_thd;
    return label_map(logits, h, w, h, w, o).labels;
}

}  // namespace

TEST(Postprocess, ArgmaxTiesGoToTheFirstClass) {
    Tensor logits = Tensor::zeros({3, 2, 2});
    for (int i = 0; i < 4; ++i) logits.data[4 + i] = 1.0f, logits.data[8 + i] = 1.0f;
    const cv::Mat labels = exact_labels(logits, 5, 7);
    EXPECT_EQ(cv::countNonZero(labels == 1), 35);
}

TEST(Postprocess, BackgroundThresholdSendsUnsurePixelsToClass0) {
    // [3,1,2]: left column class 2 sure (p ~ 0.96), right column class 1 at p = 0.5.
    Tensor logits = Tensor::zeros({3, 1, 2});
    logits.data[3] = static_cast<float>(std::log(2.0));  // class 1, right
    logits.data[4] = 4.0f;                                // class 2, left
    const auto at = [](const cv::Mat& m, int x) { return m.at<int32_t>(0, x); };
    cv::Mat plain = exact_labels(logits, 1, 2);
    EXPECT_EQ(at(plain, 0), 2);
    EXPECT_EQ(at(plain, 1), 1);
    cv::Mat above = exact_labels(logits, 1, 2, 0.51);
    EXPECT_EQ(at(above, 0), 2);
    EXPECT_EQ(at(above, 1), 0);
    cv::Mat below = exact_labels(logits, 1, 2, 0.49);
    EXPECT_EQ(at(below, 1), 1);
    cv::Mat all = exact_labels(logits, 1, 2, 0.99);
    EXPECT_EQ(at(all, 0), 0);
    EXPECT_EQ(at(all, 1), 0);
}

TEST(Postprocess, PaletteIsVocBitPattern) {
    const auto p = palette(4);
    EXPECT_EQ(p[0], (Rgb{128, 0, 0}));
    EXPECT_EQ(p[1], (Rgb{0, 128, 0}));
    EXPECT_EQ(p[2], (Rgb{128, 128, 0}));
    EXPECT_EQ(p[3], (Rgb{0, 0, 128}));
}

TEST(Postprocess, OverlayRoundsLikeNumpy) {
    cv::Mat rgb(1, 1, CV_8UC3, cv::Scalar(101, 0, 255)), labels(1, 1, CV_32S, cv::Scalar(0));
    const cv::Mat out = overlay(rgb, labels, {Rgb{128, 0, 0}}, 0.5);
    // clip(0.5 * x + 0.5 * c + 0.5): 115 (114.5 + 0.5), 0 (0.5), 128 (127.5 + 0.5)
    EXPECT_EQ(out.at<cv::Vec3b>(0, 0), cv::Vec3b(115, 0, 128));
}

TEST(Npy, RoundTripAndErrors) {
    const fs::path dir = fs::temp_directory_path() / ("ovss_npy_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    write_npy(dir / "a.npy", make_npy(std::vector<float>{1.5f, -2.0f, 3.0f, 4.0f, 5.0f, 6.0f}, {2, 3}));
    const NpyArray a = read_npy(dir / "a.npy");
    EXPECT_EQ(a.descr, "<f4");
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(a.to_float()[1], -2.0f);
    EXPECT_THROW(a.to_int32(), OvssError);
    std::ofstream(dir / "bad.npy") << "not numpy";
    EXPECT_THROW(read_npy(dir / "bad.npy"), OvssError);
    EXPECT_THROW(read_npy(dir / "missing.npy"), OvssError);
    fs::resize_file(dir / "a.npy", fs::file_size(dir / "a.npy") - 4);
    try {
        read_npy(dir / "a.npy");
        FAIL() << "truncated file accepted";
    } catch (const OvssError& e) {
        EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
    }
    fs::remove_all(dir);
}

TEST(Sha256, KnownVector) {
    EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ImagePolicy, AcceptsGrayRgbRgba) {
    cv::Mat gray(4, 5, CV_8UC1, cv::Scalar(7)), rgba(4, 5, CV_8UC4, cv::Scalar(1, 2, 3, 4));
    EXPECT_EQ(as_rgb_uint8(gray).at<cv::Vec3b>(3, 4), cv::Vec3b(7, 7, 7));
    EXPECT_EQ(as_rgb_uint8(rgba).at<cv::Vec3b>(0, 0), cv::Vec3b(1, 2, 3));
    EXPECT_EQ(as_rgb_uint8(rgba).type(), CV_8UC3);
}

TEST(ImagePolicy, RejectsWrongShapesWithClearMessages) {
    const std::vector<std::pair<cv::Mat, std::string>> bad = {
        {cv::Mat(), "empty side"}, {cv::Mat(4, 5, CV_8UC2), "1, 3 or 4 channels"},
        {cv::Mat(4, 5, CV_16UC3), "uint8"}, {cv::Mat(4, 5, CV_32FC3), "uint8"},
        {cv::Mat(0, 5, CV_8UC3), "empty side"}};
    for (const auto& [image, message] : bad) {
        try {
            as_rgb_uint8(image);
            FAIL() << "accepted: " << message;
        } catch (const InvalidImageError& e) {
            EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
        }
    }
}

TEST(Resize, IdentityAndBadTargets) {
    cv::Mat img(3, 4, CV_8UC3, cv::Scalar(9, 8, 7));
    EXPECT_EQ(cv::norm(resize_bilinear(img, 3, 4), img, cv::NORM_INF), 0.0);
    EXPECT_THROW(resize_bilinear(img, 0, 4), ConfigError);
    EXPECT_THROW(resize_bilinear(cv::Mat(), 2, 2), InvalidImageError);
}

TEST(Manifest, RejectsBadJsonAndFields) {
    EXPECT_THROW(manifest_from_json_text("{not json", "m.json"), ModelFolderError);
    EXPECT_THROW(manifest_from_json_text("[]", "m.json"), ModelFolderError);
    try {
        manifest_from_json_text(R"({"format_version": 1})", "m.json");
        FAIL();
    } catch (const ModelFolderError& e) {
        EXPECT_STREQ(e.what(), "manifest is missing 'preprocess'");
    }
    try {
        manifest_from_json_text(R"({"format_version": 2})", "m.json");
        FAIL();
    } catch (const ModelFolderError& e) {
        EXPECT_NE(std::string(e.what()).find("format_version 2 is not supported"), std::string::npos);
    }
}

TEST(FrameQueue, DropsOldestOrWaits) {
    StopFlag stop;
    FrameQueue<int> drop(2, true);
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(drop.put(i, stop));
    int v = -1;
    EXPECT_EQ(drop.get(v, std::chrono::milliseconds(10)), FrameQueue<int>::Got::Item);
    EXPECT_EQ(v, 3);
    EXPECT_EQ(drop.dropped(), 3u);
    EXPECT_EQ(drop.high_water(), 2u);
    FrameQueue<int> wait(1, false);
    EXPECT_TRUE(wait.put(1, stop));
    stop.set();
    EXPECT_FALSE(wait.put(2, stop));  // full and stopping: not added, no deadlock
    wait.close();
    EXPECT_EQ(wait.get(v, std::chrono::milliseconds(10)), FrameQueue<int>::Got::Item);
    EXPECT_EQ(wait.get(v, std::chrono::milliseconds(10)), FrameQueue<int>::Got::Closed);
}

TEST(Ring, PercentileLikeNumpy) {
    Ring r(3);
    EXPECT_FALSE(r.percentile(50).has_value());
    for (double v : {10.0, 1.0, 2.0, 3.0}) r.append(v);  // keeps the last 3
    EXPECT_DOUBLE_EQ(*r.percentile(50), 2.0);
    EXPECT_DOUBLE_EQ(*r.percentile(90), 2.8);
}

TEST(Args, ParsesAndRejects) {
    const char* argv[] = {"prog", "--model", "m", "--threads=2", "--show"};
    const Args args(5, const_cast<char**>(argv), {"--model", "--threads"}, {"--show"});
    EXPECT_EQ(args.require("--model"), "m");
    EXPECT_EQ(args.get_int("--threads", 0, 1), 2);
    EXPECT_TRUE(args.has("--show"));
    EXPECT_THROW(args.require("--image"), ConfigError);
    const char* bad[] = {"prog", "--nope"};
    EXPECT_THROW(Args(2, const_cast<char**>(bad), {}, {}), ConfigError);
}
