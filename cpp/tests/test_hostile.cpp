// Hostile folders, images and arguments (issue 17), made on the fly from the golden folders:
// folder confinement (absolute names, "..", symlinks leading out refused; symlinks inside, as in
// the generation-folder layout, accepted), sha256 fields never skipped, manifest numbers
// type-checked and bounded, JSON depth and size bounded, pixel limits read from image headers
// before decoding, window-count and flag bounds, output paths checked before the work.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>

#include <opencv2/imgcodecs.hpp>

#include "golden.hpp"
#include "ovss/cli.hpp"
#include "ovss/errors.hpp"
#include "ovss/folder_paths.hpp"
#include "ovss/image.hpp"
#include "ovss/manifest.hpp"
#include "ovss/npy.hpp"
#include "ovss/outputs.hpp"
#include "ovss/segmenter.hpp"
#include "ovss/sha256.hpp"
#include "ovss/sources.hpp"
#include "ovss/windows.hpp"

namespace fs = std::filesystem;
using namespace ovss;
using nlohmann::json;

namespace {

/// A temp dir per test (removed at the end) and copies of golden folders in it.
class Hostile : public ::testing::Test {
protected:
    void SetUp() override {
        root_ = fs::temp_directory_path() / ("ovss_hostile_" + std::to_string(::getpid()) + "_" +
                                             ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(root_);
        fs::create_directories(root_);
    }
    void TearDown() override {
        if (!root_.empty()) fs::remove_all(root_);
    }
    /// A copy of golden folder ``name``; input-vocabulary folders get text_embeddings_sha256
    /// (older goldens lack it).
    fs::path copy(const std::string& name, const std::string& as = "") {
        if (golden::dir().empty()) return {};
        const fs::path dst = root_ / (as.empty() ? name : as);
        fs::copy(golden::dir() / "folders" / name, dst, fs::copy_options::recursive);
        json m = manifest(dst);
        if (m.contains("text_embeddings_file") && m["text_embeddings_file"].is_string()) {
            m["text_embeddings_sha256"] = sha256_file(dst / m["text_embeddings_file"].get<std::string>());
            write(dst / "manifest.json", m.dump());
        }
        return dst;
    }
    static void write(const fs::path& path, const std::string& text) {
        std::ofstream(path, std::ios::binary) << text;
    }
    static json manifest(const fs::path& folder) {
        std::ifstream in(folder / "manifest.json");
        return json::parse(in);
    }
    /// Rewrites ``folder``'s manifest with ``edit`` applied to ``good``.
    static void edit(const fs::path& folder, const json& good, const std::function<void(json&)>& change) {
        json m = good;
        change(m);
        write(folder / "manifest.json", m.dump());
    }
    fs::path root_;
};

#define NEED_GOLDEN() SKIP_WITHOUT_GOLDEN()

/// Runs ``f`` and expects an ``E`` whose message contains ``part``.
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

/// An 8-bit grayscale PNG header (signature + IHDR) claiming ``w`` x ``h``, no image data.
std::string png_header(uint32_t w, uint32_t h) {
    std::string s = "\x89PNG\r\n\x1a\n";
    s += std::string("\0\0\0\x0dIHDR", 8);
    for (uint32_t v : {w, h})
        for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((v >> shift) & 0xff);
    s += std::string("\x08\0\0\0\0", 5) + std::string("\0\0\0\0", 4);  // bad CRC: never decoded
    return s;
}

}  // namespace

// ---- 1. folder confinement ---------------------------------------------------------------------

TEST_F(Hostile, ManifestFileNamesMustStayInsideTheFolder) {
    NEED_GOLDEN();
    const fs::path f = copy("vit_fixed");
    const json good = manifest(f);
    const fs::path outside = root_ / "outside";
    fs::create_directories(outside);
    fs::copy_file(f / "model.onnx", outside / "model.onnx");  // a valid graph with the right hash
    edit(f, good, [&](json& m) { m["model_file"] = (outside / "model.onnx").string(); });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "is an absolute path");
    edit(f, good, [](json& m) { m["model_file"] = "../outside/model.onnx"; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "has a '..' component");
    edit(f, good, [](json& m) { m["model_file"] = "sub/../../outside/model.onnx"; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "has a '..' component");
    edit(f, good, [](json& m) { m["model_file"] = ""; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "model_file is empty");
    edit(f, good, [](json& m) { m["model_file"] = "."; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "names the folder itself");
    edit(f, good, [](json& m) { m["model_file"] = std::string("model.onnx\0.txt", 15); });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "NUL byte");
    // variants and the text encoder are confined too, though the C++ programs never run them
    edit(f, good, [](json& m) { m["variants"] = {{"fp16", {{"file", "/etc/passwd"}, {"sha256", std::string(64, 'a')}}}}; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "variants.fp16.file '/etc/passwd' is an absolute path");
    edit(f, good, [](json& m) {
        m["text_encoder"] = {{"file", "../t.onnx"}, {"sha256", std::string(64, 'a')}, {"vocab_file", "bpe.gz"},
                             {"vocab_sha256", std::string(64, 'b')}, {"context_length", 77}};
    });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "text_encoder.file '../t.onnx' has a '..'");
    edit(f, good, [](json& m) { m["model_file"] = "model.onnx"; });
    EXPECT_NO_THROW(Segmenter(f, opts()));
}

TEST_F(Hostile, SymlinksLeadingOutAreRefused) {
    NEED_GOLDEN();
    const fs::path f = copy("vit_input");
    const fs::path outside = root_ / "outside";
    fs::create_directories(outside);
    // the model: a symlink to an identical file outside (its hash matches: only the place is wrong)
    fs::rename(f / "model.onnx", outside / "model.onnx");
    fs::create_symlink(outside / "model.onnx", f / "model.onnx");
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "outside the model folder");
    fs::remove(f / "model.onnx");
    fs::create_symlink("../outside/model.onnx", f / "model.onnx");  // relative, still out
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "outside the model folder");
    fs::remove(f / "model.onnx");
    fs::rename(outside / "model.onnx", f / "model.onnx");
    // the text embeddings, through a symlinked sub-folder
    const json good = manifest(f);
    fs::rename(f / "text_embeddings.npy", outside / "text_embeddings.npy");
    fs::create_directory_symlink(outside, f / "emb");
    edit(f, good, [](json& m) { m["text_embeddings_file"] = "emb/text_embeddings.npy"; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "text_embeddings_file 'emb/text_embeddings.npy' resolves");
    // manifest.json itself
    edit(f, good, [](json&) {});
    fs::rename(outside / "text_embeddings.npy", f / "text_embeddings.npy");
    EXPECT_NO_THROW(Segmenter(f, opts()));
    fs::rename(f / "manifest.json", outside / "manifest.json");
    fs::create_symlink(outside / "manifest.json", f / "manifest.json");
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "manifest file 'manifest.json' resolves");
}

TEST_F(Hostile, GenerationLayoutSymlinksInsideAreAccepted) {
    NEED_GOLDEN();
    // DIR/.gen/<id>/ holds the files, DIR/.current -> .gen/<id>, DIR/<name> -> .current/<name>
    const fs::path f = copy("vit_input");
    const fs::path gen = f / ".gen" / "g1";
    fs::create_directories(gen);
    for (const char* name : {"manifest.json", "model.onnx", "text_embeddings.npy"}) {
        fs::rename(f / name, gen / name);
        fs::create_symlink(fs::path(".current") / name, f / name);
    }
    fs::create_directory_symlink(fs::path(".gen") / "g1", f / ".current");
    Segmenter seg(f, opts());
    const cv::Mat img = golden::read_png_rgb(golden::dir() / "images" / "small_160x200.png");
    EXPECT_EQ(seg(img).labels.rows, 160);
    // and the whole folder reached through a symlink
    fs::create_directory_symlink(f, root_ / "linked");
    EXPECT_NO_THROW(Segmenter(root_ / "linked", opts()));
}

TEST_F(Hostile, Sha256FieldsAreNeverSkipped) {
    NEED_GOLDEN();
    const fs::path f = copy("vit_input");
    const json good = manifest(f);
    edit(f, good, [](json& m) { m["model_sha256"] = ""; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "model_sha256 is empty");
    edit(f, good, [](json& m) { m["model_sha256"] = "skip"; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "model_sha256 'skip' is not a sha256");
    edit(f, good, [](json& m) { m.erase("text_embeddings_sha256"); });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "no text_embeddings_sha256");
    edit(f, good, [](json& m) { m["text_embeddings_sha256"] = ""; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "text_embeddings_sha256 is empty");
    edit(f, good, [](json& m) { m["variants"] = {{"int8", {{"file", "model_int8.onnx"}, {"sha256", ""}}}}; });
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "variants.int8.sha256 is empty");
    // upper-case hex is a sha256 too
    edit(f, good, [](json& m) {
        std::string up = m["model_sha256"];
        for (char& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        m["model_sha256"] = up;
    });
    EXPECT_NO_THROW(Segmenter(f, opts()));
    // modified embeddings: refused by their hash (unless verification is off)
    edit(f, good, [](json&) {});
    NpyArray emb = read_npy(f / "text_embeddings.npy");
    std::vector<float> values = emb.to_float();
    values[0] += 1.0f;
    write_npy(f / "text_embeddings.npy", make_npy(values, emb.shape));
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "does not match the manifest's text_embeddings_sha256");
    SegmenterOptions o = opts();
    o.verify = false;
    EXPECT_NO_THROW(Segmenter(f, o));
}

TEST_F(Hostile, NpyHeaderClaimingHugeDataIsRefusedBeforeAllocating) {
    const fs::path path = root_ / "big.npy";
    write_npy(path, make_npy(std::vector<float>(6, 1.0f), {2, 3}));
    std::string bytes;
    {
        std::ifstream in(path, std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    const std::string from = "(2, 3)", to = "(4000000000, 4000000000)";
    bytes.replace(bytes.find(from), from.size(), to);
    write(path, bytes);
    expect_error<OvssError>([&] { read_npy(path); }, "npy shape claims more data than the file holds");
}

// ---- 2. manifest numbers, depth and size -------------------------------------------------------

TEST_F(Hostile, ManifestNumbersAreTypeChecked) {
    NEED_GOLDEN();
    const fs::path f = copy("vit_fixed");
    const json good = manifest(f);
    const auto refused = [&](const std::function<void(json&)>& change, const std::string& part) {
        edit(f, good, change);
        expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, part);
    };
    refused([](json& m) { m["preprocess"]["input_size"] = {224.0, 224}; }, "'preprocess.input_size' must hold integers");
    refused([](json& m) { m["preprocess"]["input_size"] = {224.7, 224.7}; }, "must hold integers");
    refused([](json& m) { m["preprocess"]["input_size"] = {true, 224}; }, "must hold integers");
    refused([](json& m) { m["preprocess"]["input_size"] = {32768, 32768}; }, "exceeds 16384 pixels a side");
    refused([](json& m) { m["preprocess"]["feature_stride"] = 16.0; }, "'preprocess.feature_stride' has type number");
    refused([](json& m) { m["preprocess"]["feature_stride"] = 0; }, "feature_stride must be > 0");
    refused([](json& m) { m["preprocess"]["feature_stride"] = 15; }, "feature_stride 15 does not divide the input size");
    refused([](json& m) { m["preprocess"]["feature_stride"] = 4294967312ull; }, "must be an integer");
    refused([](json& m) { m["format_version"] = 1.0; }, "'format_version' has type number");
    refused([](json& m) { m["opset"] = 18446744073709551615ull; }, "'opset' must be an integer");
    refused([](json& m) { m["method_cfg"]["slide_stride"] = 100.5; }, "'method_cfg.slide_stride' has type number");
    refused([](json& m) { m["method_cfg"]["short_side"] = "448"; }, "'method_cfg.short_side' has type string");
    refused([](json& m) { m["method_cfg"]["prob_thd"] = "0.5"; }, "prob_thd must be a number in [0, 1)");
    refused([](json& m) { m["method_cfg"]["seen_bias"] = "0.1"; }, "'method_cfg.seen_bias' has type string");
    refused([](json& m) { m["outputs"][0]["shape"][1] = 4.5; }, "bad shape dimension 4.5");
    refused([](json& m) { m["text_encoder"] = {{"file", "t.onnx"}, {"sha256", std::string(64, 'a')}, {"vocab_file", "b.gz"},
                                               {"vocab_sha256", std::string(64, 'b')}, {"context_length", 100000}}; },
            "context_length must be in [2, 1024]");
    // NaN / inf: not JSON (Python writes NaN, 1e999 overflows), refused as such, not a crash
    std::string text = good.dump();
    const std::string mean = "\"mean\":[";
    write(f / "manifest.json", std::string(text).insert(text.find(mean) + mean.size(), "NaN,"));
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "is not valid JSON");
    const std::string std_key = "\"std\":[";
    write(f / "manifest.json", std::string(text).replace(text.find(std_key), std_key.size(), std_key + "1e999,"));
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "is not valid JSON");
    edit(f, good, [](json&) {});
    EXPECT_NO_THROW(Segmenter(f, opts()));
}

TEST_F(Hostile, ManifestDepthAndSizeAreBounded) {
    NEED_GOLDEN();
    const fs::path f = copy("vit_fixed");
    const json good = manifest(f);
    std::string deep = good.dump();
    deep.insert(deep.size() - 1, ",\"deep\":" + std::string(40, '[') + std::string(40, ']'));
    write(f / "manifest.json", deep);
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "nests JSON deeper than 32 levels");
    // brackets inside strings do not count
    std::string quoted = good.dump();
    quoted.insert(quoted.size() - 1, ",\"note\":\"" + std::string(100, '[') + "\\\"" + std::string(100, '{') + "\"");
    write(f / "manifest.json", quoted);
    EXPECT_NO_THROW(Segmenter(f, opts()));
    std::string big = good.dump();
    big.insert(big.size() - 1, ",\"pad\":\"" + std::string(17u << 20, ' ') + "\"");
    write(f / "manifest.json", big);
    expect_error<ModelFolderError>([&] { Segmenter(f, opts()); }, "is larger than 16 MiB");
    EXPECT_THROW(manifest_from_json_text(std::string(100000, '['), "m.json"), ModelFolderError);
}

// ---- 4. resource limits ------------------------------------------------------------------------

TEST_F(Hostile, PixelLimitFromTheHeaderBeforeDecoding) {
    const fs::path png = root_ / "huge.png";
    write(png, png_header(100000, 100000));
    const auto t0 = std::chrono::steady_clock::now();
    expect_error<ImageTooLargeError>([&] { load_image(png); }, "100000x100000 = 10000000000 pixels, over the limit of 50000000");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
    // no limit: the header passes, the missing data does not decode
    expect_error<InvalidImageError>([&] { load_image(png, 0); }, "cannot decode image");
    // a real image over a small limit, and at it
    const fs::path small = root_ / "small.png";
    cv::imwrite(small.string(), cv::Mat(30, 40, CV_8UC3, cv::Scalar(1, 2, 3)));
    expect_error<ImageTooLargeError>([&] { load_image(small, 1199); }, "40x30 = 1200 pixels, over the limit of 1199");
    EXPECT_EQ(load_image(small, 1200).cols, 40);
    expect_error<InvalidImageError>([&] { load_image(root_); }, "is a folder, not an image");
}

TEST_F(Hostile, HeaderSizesOfEveryFormatWeRead) {
    const cv::Mat img(37, 53, CV_8UC3, cv::Scalar(10, 20, 30));
    for (const char* ext : {".png", ".jpg", ".bmp", ".ppm", ".pgm", ".webp"}) {
        const fs::path path = root_ / (std::string("img") + ext);
        cv::Mat out = img;
        if (std::string(ext) == ".pgm") cv::cvtColor(img, out, cv::COLOR_BGR2GRAY);
        ASSERT_TRUE(cv::imwrite(path.string(), out)) << ext;
        const auto size = image_header_size(path);
        ASSERT_TRUE(size.has_value()) << ext;
        EXPECT_EQ(*size, (std::pair<int64_t, int64_t>{37, 53})) << ext;
    }
    // a JPEG whose frame header follows an APP segment, claiming 60000x60000
    std::string jpg = "\xff\xd8\xff\xe0" + std::string("\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0", 16);
    jpg += "\xff\xc0" + std::string("\0\x11\x08\xea\x60\xea\x60\x03\x01\x22\0\x02\x11\x01\x03\x11\x01", 17);
    write(root_ / "huge.jpg", jpg);
    EXPECT_EQ(image_header_size(root_ / "huge.jpg"), (std::pair<int64_t, int64_t>{60000, 60000}));
    expect_error<ImageTooLargeError>([&] { load_image(root_ / "huge.jpg"); }, "over the limit");
    write(root_ / "garbage.png", "not an image at all");
    EXPECT_FALSE(image_header_size(root_ / "garbage.png").has_value());
}

TEST_F(Hostile, ImageSourcesHonourThePixelLimit) {
    const fs::path png = root_ / "huge.png";
    write(png, png_header(20000, 20000));
    SourceCfg cfg;
    expect_error<SourceError>([&] { open_source(png.string(), cfg); }, "over the limit of 50000000");
    cfg.max_pixels = -1;
    expect_error<ConfigError>([&] { open_source(png.string(), cfg); }, "max_pixels must be >= 0");
    // folders skip (and count) the files over the limit, as undecodable ones
    const fs::path dir = root_ / "frames";
    fs::create_directories(dir);
    fs::copy_file(png, dir / "a.png");
    cv::imwrite((dir / "b.png").string(), cv::Mat(8, 8, CV_8UC3, cv::Scalar(0)));
    cfg.max_pixels = 1000;
    auto source = open_source(dir.string(), cfg);
    const auto frame = source->read();
    ASSERT_TRUE(frame.has_value());
    EXPECT_EQ(frame->image.rows, 8);
    EXPECT_EQ(source->skipped, 1);
}

TEST_F(Hostile, SlidePlansAreBounded) {
    expect_error<ConfigError>([] { plan_windows(300, 410, 224, 1, 16, SlideEdge::Flush); },
                              "needs 14399 windows, over the limit of 10000");
    EXPECT_EQ(plan_windows(300, 410, 224, 149, 16, SlideEdge::Flush).boxes.size(), 6u);
    expect_error<ConfigError>([] { plan_windows(20000, 20000, 224, 16, 16, SlideEdge::Grid); }, "over the limit");
}

// ---- 5. arguments and output paths -------------------------------------------------------------

TEST_F(Hostile, FlagBounds) {
    const auto parse = [](std::vector<std::string> argv) {
        argv.insert(argv.begin(), "prog");
        std::vector<char*> ptrs;
        for (auto& a : argv) ptrs.push_back(a.data());
        return Args(static_cast<int>(ptrs.size()), ptrs.data(), {"--threads", "--max-pixels"}, {});
    };
    for (const std::string bad : {"0", "257", "4x", " 4", "", "99999999999", "1.5"})
        expect_error<ConfigError>([&] { parse({"--threads", bad}).get_int("--threads", 0, 1, kMaxThreads); },
                                  "--threads must be an integer in [1, 256]");
    EXPECT_EQ(parse({"--threads=256"}).get_int("--threads", 0, 1, kMaxThreads), 256);
    expect_error<ConfigError>([&] { max_pixels_flag(parse({"--max-pixels", "-1"})); }, "--max-pixels must be an integer");
    EXPECT_EQ(max_pixels_flag(parse({"--max-pixels", "0"})), 0);
    EXPECT_EQ(max_pixels_flag(parse({"--max-pixels", "100000000000"})), 100000000000);
    EXPECT_EQ(max_pixels_flag(parse({})), kDefaultMaxPixels);
}

TEST_F(Hostile, OutputPathsAreCheckedFirst) {
    const fs::path file = root_ / "a_file";
    write(file, "x");
    expect_error<OutputPathError>([&] { check_output_file(root_, "--out"); }, "is an existing folder, not a file");
    expect_error<OutputPathError>([&] { check_output_file(file / "x.png", "--out"); }, "is not a folder");
    expect_error<OutputPathError>([&] { check_output_file(file / "deeper" / "x.png", "--out"); }, "is not a folder");
    expect_error<OutputPathError>([&] { check_output_file("", "--out"); }, "empty path");
    expect_error<OutputPathError>([&] { check_output_dir(file, "--out"); }, "exists and is not a folder");
    expect_error<OutputPathError>([&] { check_output_dir(file / "sub", "--out"); }, "is not a folder");
    EXPECT_NO_THROW(check_output_file(file, "--out"));                       // replaced
    EXPECT_NO_THROW(check_output_file(root_ / "new" / "deep" / "x.png", "--out"));  // parents made later
    EXPECT_NO_THROW(check_output_dir(root_ / "new_dir", "--out"));
    EXPECT_FALSE(fs::exists(root_ / "new")) << "the checks create nothing";
    if (::geteuid() != 0) {
        const fs::path locked = root_ / "locked";
        fs::create_directories(locked);
        fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
        expect_error<OutputPathError>([&] { check_output_file(locked / "x.png", "--out"); }, "no permission");
        fs::permissions(locked, fs::perms::owner_all);
    }
}
