// The resize rule: the linked OpenCV's INTER_LINEAR against its uint8 fixed-point arithmetic,
// written out here without OpenCV (the same arithmetic as runtime/preprocess.py's numpy path).
// OpenCV does not promise INTER_LINEAR bytes across versions and CPUs, so this is the test to run
// on a new device; the golden test checks the same bytes against the Python runtime.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <opencv2/core.hpp>

#include "ovss/errors.hpp"
#include "ovss/preprocess.hpp"

using namespace ovss;

namespace {

constexpr int kScale = 1 << 11;  // INTER_RESIZE_COEF_BITS = 11

/// One axis: first source index (unclamped) and the two 11-bit weights per output index.
struct Taps {
    std::vector<int> first, w0, w1;
};

Taps taps(int in, int out) {
    const double scale = 1.0 / (static_cast<double>(out) / in);  // OpenCV: 1 / inv_scale
    Taps t;
    for (int i = 0; i < out; ++i) {
        const float centre = static_cast<float>((i + 0.5) * scale - 0.5);
        const float first = std::floor(centre), frac = centre - first;
        t.first.push_back(static_cast<int>(first));
        t.w0.push_back(static_cast<int>(std::nearbyint((1.f - frac) * kScale)));  // half to even
        t.w1.push_back(static_cast<int>(std::nearbyint(frac * kScale)));
    }
    return t;
}

/// INTER_LINEAR on uint8: edge columns clamped (weight 1 on the edge), rows clamped with the
/// unclamped weights, horizontal pass into int, vertical pass as OpenCV's uint8 kernel.
cv::Mat reference(const cv::Mat& in, int out_h, int out_w) {
    const int cn = in.channels();
    Taps cols = taps(in.cols, out_w);
    for (int x = 0; x < out_w; ++x) {
        if (cols.first[x] < 0 || cols.first[x] >= in.cols - 1) cols.w0[x] = kScale, cols.w1[x] = 0;
        cols.first[x] = std::clamp(cols.first[x], 0, in.cols - 1);
    }
    std::vector<int> horiz(static_cast<size_t>(in.rows) * out_w * cn);
    for (int y = 0; y < in.rows; ++y) {
        const uint8_t* s = in.ptr<uint8_t>(y);
        for (int x = 0; x < out_w; ++x) {
            const int a = cols.first[x], b = std::min(a + 1, in.cols - 1);
            for (int c = 0; c < cn; ++c)
                horiz[(static_cast<size_t>(y) * out_w + x) * cn + c] =
                    s[a * cn + c] * cols.w0[x] + s[b * cn + c] * cols.w1[x];
        }
    }
    const Taps rows = taps(in.rows, out_h);
    cv::Mat out(out_h, out_w, in.type());
    for (int y = 0; y < out_h; ++y) {
        const int* r0 = &horiz[static_cast<size_t>(std::clamp(rows.first[y], 0, in.rows - 1)) * out_w * cn];
        const int* r1 = &horiz[static_cast<size_t>(std::clamp(rows.first[y] + 1, 0, in.rows - 1)) * out_w * cn];
        uint8_t* d = out.ptr<uint8_t>(y);
        for (int i = 0; i < out_w * cn; ++i) {
            const int v = ((rows.w0[y] * (r0[i] >> 4)) >> 16) + ((rows.w1[y] * (r1[i] >> 4)) >> 16);
            d[i] = static_cast<uint8_t>(std::clamp((v + 2) >> 2, 0, 255));
        }
    }
    return out;
}

cv::Mat random_image(std::mt19937& rng, int h, int w, int cn) {
    cv::Mat m(h, w, CV_8UC(cn));
    std::uniform_int_distribution<int> byte(0, 255);
    for (size_t i = 0; i < m.total() * cn; ++i) m.data[i] = static_cast<uint8_t>(byte(rng));
    return m;
}

void expect_rule(std::mt19937& rng, int h, int w, int cn, int out_h, int out_w) {
    const cv::Mat in = random_image(rng, h, w, cn);
    const cv::Mat got = resize_bilinear(in, out_h, out_w), want = reference(in, out_h, out_w);
    ASSERT_EQ(got.size(), want.size());
    ASSERT_EQ(got.type(), want.type());
    EXPECT_EQ(cv::norm(got.reshape(1), want.reshape(1), cv::NORM_INF), 0.0)
        << h << "x" << w << "x" << cn << " -> " << out_h << "x" << out_w;
}

}  // namespace

TEST(Resize, OpenCvMatchesTheFixedPointRuleOnRandomSizes) {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> side(1, 90);
    const int channels[] = {1, 3, 4};
    for (int i = 0; i < 600; ++i)
        expect_rule(rng, side(rng), side(rng), channels[i % 3], side(rng), side(rng));
}

TEST(Resize, OpenCvMatchesTheFixedPointRuleOnExactRatiosAndEdges) {
    std::mt19937 rng(8);
    // 2x down (OpenCV's INTER_AREA fast path), 2x up (its own 2x path in recent OpenCV), 4x,
    // 3x, single pixels and lines, and the deployment sizes.
    const int cases[][4] = {{100, 100, 50, 50},  {50, 60, 100, 120},   {128, 96, 32, 24},
                            {32, 24, 128, 96},   {90, 60, 30, 20},     {30, 20, 90, 60},
                            {1, 1, 5, 7},        {1, 9, 1, 3},         {9, 1, 3, 1},
                            {5, 300, 1, 1},      {2, 2, 1, 1},         {720, 1280, 224, 224},
                            {1440, 1920, 448, 597}, {360, 480, 224, 299}, {7, 3000, 5000, 2}};
    for (const auto& c : cases)
        for (int cn : {1, 3, 4}) expect_rule(rng, c[0], c[1], cn, c[2], c[3]);
}

TEST(Resize, SameSizeAndBadTargets) {
    std::mt19937 rng(9);
    const cv::Mat img = random_image(rng, 3, 4, 3);
    const cv::Mat copy = resize_bilinear(img, 3, 4);
    EXPECT_NE(copy.data, img.data);
    EXPECT_EQ(cv::norm(copy, img, cv::NORM_INF), 0.0);
    EXPECT_EQ(resize_rgb(img, 3, 4).data, img.data);  // resize_rgb hands the image back
    EXPECT_THROW(resize_bilinear(img, 4, 0), ConfigError);
    EXPECT_THROW(resize_bilinear(cv::Mat(3, 4, CV_16UC3), 2, 2), InvalidImageError);
}

TEST(Resize, ShortSideRoundsHalfUpLikeTheEvaluation) {
    EXPECT_EQ(short_side_size(4, 5, 2), std::make_pair(2, 3));          // 2.5 -> 3
    EXPECT_EQ(short_side_size(100, 150, 51), std::make_pair(51, 77));   // 76.5 -> 77
    EXPECT_EQ(short_side_size(1440, 1920, 448), std::make_pair(448, 597));
    EXPECT_EQ(short_side_size(375, 500, 512), std::make_pair(512, 683));
    EXPECT_EQ(short_side_size(1, 1000, 1), std::make_pair(1, 1000));
}
