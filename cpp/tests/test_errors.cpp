// Clear errors for bad folders and images: missing folder / manifest / model, corrupt JSON,
// missing fields, sha256 mismatch, missing text embeddings, wrong image shapes.
#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>
#include <functional>

#include "golden.hpp"
#include "ovss/errors.hpp"
#include "ovss/image.hpp"
#include "ovss/npy.hpp"
#include "ovss/segmenter.hpp"

namespace fs = std::filesystem;
using namespace ovss;

namespace {

/// A fresh copy of a golden folder in a temp dir, removed at the end of the test.
class FolderCopy : public ::testing::Test {
protected:
    void SetUp() override {
        SKIP_WITHOUT_GOLDEN();
        root_ = fs::temp_directory_path() / ("ovss_err_" + std::to_string(::getpid()) + "_" +
                                             ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(root_);
        fs::create_directories(root_);
    }
    void TearDown() override {
        if (!root_.empty()) fs::remove_all(root_);
    }
    fs::path copy(const std::string& name) {
        const fs::path dst = root_ / name;
        fs::copy(golden::dir() / "folders" / name, dst, fs::copy_options::recursive);
        return dst;
    }
    static void write(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }
    static nlohmann::json manifest(const fs::path& folder) {
        std::ifstream in(folder / "manifest.json");
        return nlohmann::json::parse(in);
    }
    fs::path root_;
};

/// Runs ``f`` and expects a ``E`` whose message contains ``part``.
template <class E, class F>
void expect_error(F f, const std::string& part) {
    try {
        f();
        ADD_FAILURE() << "no error; expected one containing: " << part;
    } catch (const E& e) {
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "message: " << e.what();
    }
}

SegmenterOptions opts() {
    SegmenterOptions o;
    o.backend_options.threads = 1;
    return o;
}

}  // namespace

TEST_F(FolderCopy, MissingFolder) {
    expect_error<ModelFolderError>([&] { Segmenter(root_ / "nope", opts()); }, "does not exist or is not a folder");
}

TEST_F(FolderCopy, MissingManifest) {
    const fs::path f = copy("vit_fixed");
    fs::remove(f / "manifest.json");
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "is missing: not a deployable folder");
}

TEST_F(FolderCopy, CorruptManifestJson) {
    const fs::path f = copy("vit_fixed");
    write(f / "manifest.json", "{\"format_version\": 1, \"classes\": [");
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "is not valid JSON");
}

TEST_F(FolderCopy, ManifestMissingFields) {
    const std::vector<std::pair<std::string, std::string>> fields = {
        {"classes", "manifest is missing 'classes'"}, {"preprocess", "manifest is missing 'preprocess'"},
        {"model_sha256", "manifest is missing 'model_sha256'"}, {"inputs", "'inputs' must be a non-empty list"}};
    const fs::path f = copy("vit_fixed");
    const nlohmann::json good = manifest(f);
    for (const auto& [field, message] : fields) {
        nlohmann::json m = good;
        m.erase(field);
        write(f / "manifest.json", m.dump());
        expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, message);
    }
    nlohmann::json m = good;
    m["preprocess"].erase("feature_stride");
    write(f / "manifest.json", m.dump());
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "missing 'preprocess.feature_stride'");
    m = good;
    m["preprocess"]["std"] = {1.0, 0.0, 1.0};
    write(f / "manifest.json", m.dump());
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "3 stds > 0");
    m = good;
    m["classes"] = "cat";
    write(f / "manifest.json", m.dump());
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "'classes' has type string");
}

TEST_F(FolderCopy, ModelFileMissing) {
    const fs::path f = copy("vit_fixed");
    fs::remove(f / "model.onnx");
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "named by the manifest is missing");
}

TEST_F(FolderCopy, ModelSha256Mismatch) {
    const fs::path f = copy("vit_fixed");
    std::ofstream(f / "model.onnx", std::ios::app) << "x";
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "does not match the manifest's sha256");
}

TEST_F(FolderCopy, CorruptModelWithoutVerify) {
    const fs::path f = copy("vit_fixed");
    write(f / "model.onnx", "not an onnx graph");
    SegmenterOptions o = opts();
    o.verify = false;
    expect_error<ModelFolderError>([&] { Segmenter(f, o); }, "onnxruntime cannot load");
}

TEST_F(FolderCopy, TextEmbeddingsMissingOrWrong) {
    const fs::path f = copy("vit_input");
    fs::rename(f / "text_embeddings.npy", root_ / "emb.npy");
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "needs the text embeddings file");
    write(f / "text_embeddings.npy", "garbage");
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); },
                                   "does not match the manifest's text_embeddings_sha256");
    SegmenterOptions o = opts();
    o.verify = false;
    expect_error<ModelFolderError>([&] { Segmenter(f, o); }, "not a .npy file");
}

TEST_F(FolderCopy, WrongImageShapes) {
    Segmenter seg(golden::dir() / "folders" / "vit_fixed", opts());
    expect_error<InvalidImageError>([&] { seg(cv::Mat()); }, "empty side");
    expect_error<InvalidImageError>([&] { seg(cv::Mat(32, 32, CV_8UC2, cv::Scalar(0))); }, "1, 3 or 4 channels");
    expect_error<InvalidImageError>([&] { seg(cv::Mat(32, 32, CV_16UC3, cv::Scalar(0))); }, "uint8");
    expect_error<InvalidImageError>([&] { seg(cv::Mat(32, 32, CV_32FC1, cv::Scalar(0))); }, "uint8");
}

TEST_F(FolderCopy, UnreadableImageFiles) {
    const auto bad = golden::index()["bad_images"];
    expect_error<InvalidImageError>([&] { load_image(root_ / "missing.png"); }, "does not exist");
    expect_error<InvalidImageError>([&] { load_image(golden::dir() / bad["garbage"].get<std::string>()); },
                                    "cannot decode image");
    expect_error<InvalidImageError>([&] { load_image(golden::dir() / bad["sixteen_bit"].get<std::string>()); },
                                    "non-8-bit");
}

TEST_F(FolderCopy, BadOptions) {
    const fs::path f = golden::dir() / "folders" / "vit_fixed";
    SegmenterOptions o = opts();
    o.mode = "tiles";
    expect_error<ConfigError>([&] { Segmenter(f, o); }, "mode must be one of");
    o = opts();
    o.backend = "tensorrt";
    expect_error<BackendUnavailable>([&] { Segmenter(f, o); }, "TensorRT");
}

TEST_F(FolderCopy, ScoreInputFormatAndPostprocessFields) {
    const fs::path f = copy("vit_fixed");
    const nlohmann::json good = manifest(f);
    const auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
        nlohmann::json m = good;
        edit(m);
        write(f / "manifest.json", m.dump());
    };
    with([](nlohmann::json& m) { m["score"] = "sigmoid"; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "manifest score 'sigmoid' is not one of");
    with([](nlohmann::json& m) { m["preprocess"]["input_format"] = "uint8-nhwc"; });  // graph input is float32
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); },
                                   "input 'image' is float32 [1,3,224,224], but preprocess.input_format "
                                   "'uint8-nhwc' needs uint8 [1,224,224,3]");
    with([](nlohmann::json& m) { m["preprocess"]["input_format"] = "float16"; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "input_format 'float16' is not one of");
    with([](nlohmann::json& m) { m["postprocess"] = {{"output_hw", {0, 4}}, {"labels_dtype", "uint8"}}; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "postprocess.output_hw must be [H,W] > 0");
    with([](nlohmann::json& m) { m["postprocess"] = {{"output_hw", {4, 4}}, {"labels_dtype", "int64"}}; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "labels_dtype 'int64' is not one of");
    // Old manifests: the score kind follows the method; the field, where present, wins.
    with([](nlohmann::json& m) { m.erase("score"); m["method"] = "zegclip"; });
    EXPECT_EQ(Segmenter(f, opts()).manifest().score, "probability");
    with([](nlohmann::json& m) { m["score"] = "softmax"; m["method"] = "cliprc"; });
    EXPECT_EQ(Segmenter(f, opts()).manifest().score, "softmax");
    // score_scale: the field, else 100 for MaskCLIP on raw cosines (no key smoothing), else 1.
    with([](nlohmann::json& m) {
        m.erase("score_scale");
        m["method_cfg"]["key_smoothing"] = false;
    });
    EXPECT_EQ(Segmenter(f, opts()).manifest().score_scale, 100.0);
    with([](nlohmann::json& m) {
        m.erase("score_scale");
        m["method_cfg"].erase("key_smoothing");
    });
    EXPECT_EQ(Segmenter(f, opts()).manifest().score_scale, 1.0);
    with([](nlohmann::json& m) { m["score_scale"] = 0; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "score_scale must be a number in (0, 1e6)");
}

TEST_F(FolderCopy, SlideEdgeAndSeenBiasFields) {
    const fs::path f = copy("vit_fixed");
    const nlohmann::json good = manifest(f);
    const auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
        nlohmann::json m = good;
        edit(m);
        write(f / "manifest.json", m.dump());
    };
    const cv::Mat img = golden::read_png_rgb(golden::dir() / "images" / "small_160x200.png");
    SegmenterOptions o = opts();
    o.mode = "slide";
    // Absent: flush (logits at the padded image's size); the manifest's, unless options say otherwise.
    EXPECT_EQ(Segmenter(f, o)(img).logits.shape, (std::vector<int64_t>{4, 224, 224}));
    with([](nlohmann::json& m) { m["method_cfg"]["slide_edge"] = "grid"; });
    EXPECT_EQ(Segmenter(f, o)(img).logits.shape, (std::vector<int64_t>{4, 14, 14}));
    o.slide_edge = "flush";
    EXPECT_EQ(Segmenter(f, o)(img).logits.shape, (std::vector<int64_t>{4, 224, 224}));
    o.slide_edge = "diagonal";
    expect_error<ConfigError>([&] { Segmenter(f, o); }, "slide_edge must be one of flush, grid, got 'diagonal'");
    with([](nlohmann::json& m) { m["method_cfg"]["slide_edge"] = "diagonal"; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); },
                                   "method_cfg.slide_edge must be 'flush' or 'grid', got \"diagonal\"");
    with([](nlohmann::json& m) { m["method_cfg"]["seen_bias"] = {0.1, 0.0, 0.1}; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "seen_bias must hold one value per class (4), got 3");
    with([](nlohmann::json& m) { m["method_cfg"]["seen_bias"] = {0.1, 0.0, 0.1, 0.0}; });
    EXPECT_EQ(Segmenter(f, opts()).manifest().seen_bias, (std::vector<float>{0.1f, 0.0f, 0.1f, 0.0f}));
}

TEST_F(FolderCopy, SeenClassesOfVocabularyAsInput) {
    // ZegCLIP with the vocabulary as input: the folder's own vocabulary gets the manifest's seen
    // bias (seen_bias at seen_classes) on logits, as Python's seen=manifest.seen_classes;
    // set_vocabulary gives none (Python: seen=None). Whole mode: logits straight from the graph.
    const fs::path f = copy("zegclip_input");
    const nlohmann::json good = manifest(f);
    const auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
        nlohmann::json m = good;
        edit(m);
        write(f / "manifest.json", m.dump());
    };
    const cv::Mat img = golden::read_png_rgb(golden::dir() / "images" / "small_160x200.png");
    SegmenterOptions o = opts();
    o.mode = "whole";
    Segmenter seg(f, o);
    EXPECT_EQ(seg.manifest().seen_class_bias, (std::vector<float>{0.1f, 0.1f, 0.0f, 0.0f}));
    const Tensor biased = seg(img).logits;
    const NpyArray emb = read_npy(f / "text_embeddings.npy");
    seg.set_vocabulary(seg.classes(), emb.to_float());
    const Tensor plain = seg(img).logits;
    ASSERT_EQ(biased.shape, plain.shape);
    const int64_t plane = plain.shape[1] * plain.shape[2];
    for (int64_t j = 0; j < static_cast<int64_t>(plain.data.size()); ++j)
        EXPECT_EQ(biased.data[j], plain.data[j] - (j / plane < 2 ? 0.1f : 0.0f)) << j;
    with([](nlohmann::json& m) { m["seen_classes"] = nlohmann::json::array(); });
    EXPECT_TRUE(Segmenter(f, opts()).manifest().seen_class_bias.empty());
    with([](nlohmann::json& m) { m["seen_classes"] = {"car", "bus"}; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "must be distinct names of 'classes'");
    with([](nlohmann::json& m) { m["seen_classes"] = {"car", "car"}; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "must be distinct names of 'classes'");
    with([](nlohmann::json& m) { m["seen_classes"] = "car"; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "seen_classes must be a list of names");
    with([](nlohmann::json& m) { m["seen_bias"] = 0; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "seen_classes are given but seen_bias is 0");
    with([](nlohmann::json& m) { m["seen_bias"] = -1; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "seen_bias must be a number in [0, 1e6)");
}

TEST_F(FolderCopy, ScoreThresholdOptions) {
    const fs::path f = copy("vit_fixed");
    SegmenterOptions o = opts();
    o.score_threshold = 1.0;
    expect_error<ConfigError>([&] { Segmenter(f, o); }, "score threshold must be in [0, 1)");
    nlohmann::json m = manifest(f);
    m["classes"] = std::vector<std::string>(256, "thing");
    write(f / "manifest.json", m.dump());
    o.score_threshold = 0.5;
    expect_error<ConfigError>([&] { Segmenter(f, o); }, "at most 255 classes, got 256");
}
