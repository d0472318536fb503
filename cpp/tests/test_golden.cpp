// Parity with the Python runtime on golden files: identical resize bytes, identical labels,
// logits within the index's tolerance (1e-5), same mode and window count.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>

#include "golden.hpp"
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
    int64_t pixels = 0;
    ASSERT_FALSE(idx["cases"].empty());
    for (const auto& c : idx["cases"]) {
        for (const LabelMethod method : {LabelMethod::Fast, LabelMethod::Exact}) {
            SCOPED_TRACE(c["name"].get<std::string>() + " postprocess " + label_method_name(method));
            Segmenter seg(golden::dir() / c["folder"].get<std::string>(), one_thread(c["mode_arg"], method));
            const SegResult r = seg(golden::read_png_rgb(golden::dir() / c["image"].get<std::string>()));
            const NpyArray labels = read_npy(golden::dir() / c["labels"].get<std::string>());
            const NpyArray logits = read_npy(golden::dir() / c["logits"].get<std::string>());
            EXPECT_EQ(r.mode, c["mode"].get<std::string>());
            EXPECT_EQ(r.windows, c["windows"].get<int>());
            EXPECT_EQ(r.classes_present, c["classes_present"].get<std::vector<std::string>>());
            ASSERT_EQ(r.logits.shape, logits.shape);
            const double diff = max_abs_diff(r.logits.data, logits.to_float());
            EXPECT_LE(diff, atol);
            worst = std::max(worst, diff);
            ASSERT_EQ((std::vector<int64_t>{r.labels.rows, r.labels.cols}), labels.shape);
            const std::vector<int32_t> want = labels.to_int32();
            const cv::Mat want_mat(r.labels.rows, r.labels.cols, CV_32S, const_cast<int32_t*>(want.data()));
            const int differing = cv::countNonZero(r.labels != want_mat);
            EXPECT_EQ(differing, 0) << "label pixels differ";
            EXPECT_EQ(r.postprocess, label_method_name(method));  // golden logits are finite, grids > 1x1
            pixels += static_cast<int64_t>(want.size());
        }
    }
    std::cout << "[ parity   ] " << idx["cases"].size() << " cases, " << pixels
              << " label pixels identical check, max |logit diff| = " << worst << std::endl;
    RecordProperty("max_logit_diff", std::to_string(worst));
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
