// Parity with the Python runtime on golden files: identical resize bytes, identical labels (by
// the fast and the exact label path, with and without a score threshold, float32 and uint8
// image inputs, host and in-graph labels), logits within the index's tolerance (1e-5), scores
// within 1e-6, same mode and window count.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>

#include "golden.hpp"
#include "ovss/label_map.hpp"
#include "ovss/npy.hpp"
#include "ovss/preprocess.hpp"
#include "ovss/segmenter.hpp"

using namespace ovss;

namespace {

cv::Mat npy_to_mat(const NpyArray& a) {
    const int channels = a.shape.size() == 3 ? static_cast<int>(a.shape[2]) : 1;
    cv::Mat m(static_cast<int>(a.shape[0]), static_cast<int>(a.shape[1]), CV_8UC(channels));
    std::memcpy(m.data, a.bytes.data(), a.bytes.size());
    return m;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
    return worst;
}

/// A golden .npy as a CV_32S / CV_32F HxW Mat.
cv::Mat npy_mat(const std::filesystem::path& path) {
    const NpyArray a = read_npy(path);
    const int type = a.descr == "<i4" ? CV_32S : CV_32F;
    EXPECT_TRUE(a.descr == "<i4" || a.descr == "<f4") << path;
    cv::Mat m(static_cast<int>(a.shape.at(0)), static_cast<int>(a.shape.at(1)), type);
    std::memcpy(m.data, a.bytes.data(), a.bytes.size());
    return m;
}

/// Pixels whose label differs from ``want`` where the golden logits (full resolution, [C,>=H,>=W])
/// of the two labels are within ``atol``: float32 exp near-ties (see the index's exp_tie_atol).
/// Returns -1 when some differing pixel is not such a tie.
int64_t exp_near_ties(const cv::Mat& labels, const cv::Mat& want, const nlohmann::json& c, double atol) {
    if (atol <= 0 || c["logits"].is_null()) return -1;
    const NpyArray a = read_npy(golden::dir() / c["logits"].get<std::string>());
    if (a.shape.size() != 3 || a.shape[1] < labels.rows || a.shape[2] < labels.cols) return -1;
    const std::vector<float> logits = a.to_float();
    const int64_t classes = a.shape[0], hp = a.shape[1], wp = a.shape[2];
    int64_t ties = 0;
    for (int y = 0; y < labels.rows; ++y)
        for (int x = 0; x < labels.cols; ++x) {
            const int32_t got = labels.at<int32_t>(y, x), ref = want.at<int32_t>(y, x);
            if (got == ref) continue;
            if (got < 0 || ref < 0 || got >= classes || ref >= classes) return -1;
            const auto at = [&](int64_t k) { return double(logits[(k * hp + y) * wp + x]); };
            if (std::fabs(at(got) - at(ref)) > atol) return -1;
            ++ties;
        }
    return ties;
}

/// Labels identical (cases with an exp_tie_atol: but for float32 exp near-ties, counted in
/// ``ties``) and, where the golden has them, scores within 1e-6; returns |score diff|.
double expect_labels_and_scores(const cv::Mat& labels, const cv::Mat& scores, const nlohmann::json& c,
                                int64_t* ties = nullptr) {
    const cv::Mat want = npy_mat(golden::dir() / c["labels"].get<std::string>());
    EXPECT_EQ(labels.size(), want.size());
    if (labels.size() != want.size()) return 0;
    const int differ = cv::countNonZero(labels != want);
    const int64_t near = differ ? exp_near_ties(labels, want, c, c.value("exp_tie_atol", 0.0)) : 0;
    if (near >= 0 && ties) *ties += near;
    if (near < 0) {
        EXPECT_EQ(differ, 0) << "label pixels differ";
    }
    if (!c.contains("scores") || c["scores"].is_null()) return 0;
    const cv::Mat want_scores = npy_mat(golden::dir() / c["scores"].get<std::string>());
    EXPECT_EQ(scores.size(), want_scores.size());
    if (scores.size() != want_scores.size()) return 0;
    const double diff = cv::norm(scores, want_scores, cv::NORM_INF);
    EXPECT_LE(diff, 1e-6) << "scores differ";
    return diff;
}

SegmenterOptions one_thread(const std::string& mode, LabelMethod method = LabelMethod::Fast) {
    SegmenterOptions o;
    o.backend = "onnxruntime";
    o.mode = mode;
    o.label_method = method;
    o.backend_options.threads = 1;  // deterministic, like the Python side
    return o;
}

}  // namespace

TEST(Golden, ResizeMatchesPythonByteForByte) {
    SKIP_WITHOUT_GOLDEN();
    const auto idx = golden::index();
    ASSERT_FALSE(idx["resize"].empty());
    for (const auto& c : idx["resize"]) {
        const cv::Mat in = npy_to_mat(read_npy(golden::dir() / c["input"].get<std::string>()));
        const cv::Mat want = npy_to_mat(read_npy(golden::dir() / c["output"].get<std::string>()));
        const cv::Mat got = resize_bilinear(in, c["size_hw"][0], c["size_hw"][1]);
        SCOPED_TRACE(c["input"].get<std::string>() + " -> " + c["size_hw"].dump());
        ASSERT_EQ(got.size(), want.size());
        ASSERT_EQ(got.type(), want.type());
        EXPECT_EQ(cv::norm(got.reshape(1), want.reshape(1), cv::NORM_INF), 0.0);
    }
}

TEST(Golden, SegmentationMatchesPython) {
    SKIP_WITHOUT_GOLDEN();
    const auto idx = golden::index();
    const double atol = idx.value("logit_atol", 1e-5);
    double worst = 0;
    int64_t pixels = 0, ties = 0;
    ASSERT_FALSE(idx["cases"].empty());
    for (const auto& c : idx["cases"]) {
        for (const LabelMethod method : {LabelMethod::Fast, LabelMethod::Exact}) {
            SCOPED_TRACE(c["name"].get<std::string>() + " postprocess " + label_method_name(method));
            SegmenterOptions o = one_thread(c["mode_arg"], method);
            o.score_threshold = c.value("score_threshold", 0.0);
            if (c.contains("slide_edge") && c["slide_edge"].is_string()) o.slide_edge = c["slide_edge"];
            o.with_scores = c.contains("scores") && !c["scores"].is_null();
            Segmenter seg(golden::dir() / c["folder"].get<std::string>(), o);
            const SegResult r = seg(golden::read_png_rgb(golden::dir() / c["image"].get<std::string>()));
            const NpyArray labels = read_npy(golden::dir() / c["labels"].get<std::string>());
            EXPECT_EQ(r.mode, c["mode"].get<std::string>());
            EXPECT_EQ(r.windows, c["windows"].get<int>());
            EXPECT_EQ(r.classes_present, c["classes_present"].get<std::vector<std::string>>());
            if (c["logits"].is_null()) {  // the graph's own labels and scores
                EXPECT_TRUE(r.logits.shape.empty());
            } else {
                const NpyArray logits = read_npy(golden::dir() / c["logits"].get<std::string>());
                ASSERT_EQ(r.logits.shape, logits.shape);
                const double diff = max_abs_diff(r.logits.data, logits.to_float());
                EXPECT_LE(diff, atol);
                worst = std::max(worst, diff);
            }
            ASSERT_EQ((std::vector<int64_t>{r.labels.rows, r.labels.cols}), labels.shape);
            expect_labels_and_scores(r.labels, r.scores, c, &ties);
            // Golden logits are finite on grids > 1x1: the fast path runs when asked for.
            const bool graph = c.value("postprocess", "host") == "graph";
            EXPECT_EQ(r.postprocess, graph ? "graph" : label_method_name(method));
            pixels += static_cast<int64_t>(r.labels.total());
        }
    }
    std::cout << "[ parity   ] " << idx["cases"].size() << " cases, " << pixels
              << " label pixels identical check (" << ties << " float32 exp near-ties differ)"
              << ", max |logit diff| = " << worst << std::endl;
    RecordProperty("max_logit_diff", std::to_string(worst));
    RecordProperty("exp_near_ties", std::to_string(ties));
}

TEST(Golden, SetVocabularyRenormalisesRows) {
    SKIP_WITHOUT_GOLDEN();
    // Rows are L2-normalised by the runtime: the folder's rows scaled by 3 and swapped in with
    // set_vocabulary give the same logits up to the rounding of the norms.
    Segmenter seg(golden::dir() / "folders" / "vit_input", one_thread("auto"));
    const NpyArray emb = read_npy(golden::dir() / "folders" / "vit_input" / "text_embeddings.npy");
    std::vector<float> rows = emb.to_float();
    for (float& v : rows) v *= 3.0f;
    const cv::Mat img = golden::read_png_rgb(golden::dir() / "images" / "small_160x200.png");
    const SegResult before = seg(img);
    seg.set_vocabulary(seg.classes(), rows);
    const SegResult after = seg(img);
    EXPECT_LE(max_abs_diff(before.logits.data, after.logits.data), 1e-5);
}

TEST(Golden, LabelMapsMatchPython) {
    SKIP_WITHOUT_GOLDEN();
    const auto idx = golden::index();
    ASSERT_FALSE(idx["label_maps"].empty());
    double worst = 0;
    for (const auto& c : idx["label_maps"]) {
        const NpyArray a = read_npy(golden::dir() / c["logits"].get<std::string>());
        const Tensor logits{a.shape, a.to_float()};
        LabelOptions o;
        o.score_kind = parse_score_kind(c["score_kind"]);
        o.score_scale = c["score_scale"], o.score_threshold = c["score_threshold"];
        o.background_thd = c["background_thd"], o.with_scores = c["with_scores"];
        for (const LabelMethod method : {LabelMethod::Fast, LabelMethod::Exact}) {
            SCOPED_TRACE(c["name"].get<std::string>() + " " + label_method_name(method));
            o.method = method;
            const LabelMap m = label_map(logits, c["out_hw"][0], c["out_hw"][1], c["span_hw"][0], c["span_hw"][1], o);
            EXPECT_EQ(m.fast, method == LabelMethod::Fast && a.shape[1] > 1 && a.shape[2] > 1);
            worst = std::max(worst, expect_labels_and_scores(m.labels, m.scores, c));
        }
    }
    std::cout << "[ parity   ] " << idx["label_maps"].size() << " label maps identical, max |score diff| = " << worst
              << std::endl;
}
