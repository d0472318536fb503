// Palette-mode label PNGs: decoded here (chunks, CRCs, zlib, filters) and by OpenCV, the pixel
// values are the class indices and the palette the class colours (255: the unknown grey).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include <opencv2/imgcodecs.hpp>

#include "ovss/errors.hpp"
#include "ovss/label_map.hpp"
#include "ovss/png.hpp"

#ifdef OVSS_TEST_HAVE_ZLIB
#include <zlib.h>
#endif

namespace fs = std::filesystem;
using namespace ovss;

namespace {

uint32_t be32(const uint8_t* p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

struct Decoded {
    int width = 0, height = 0, depth = 0, colour_type = 0;
    std::vector<uint8_t> plte, idat;
};

/// The chunks of a PNG, every CRC checked against zlib's crc32 where available.
Decoded parse_png(const std::vector<uint8_t>& png) {
    Decoded d;
    const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    EXPECT_TRUE(png.size() > 8 && std::equal(sig, sig + 8, png.begin()));
    size_t at = 8;
    while (at + 12 <= png.size()) {
        const uint32_t len = be32(&png[at]);
        const std::string type(png.begin() + at + 4, png.begin() + at + 8);
        const uint8_t* data = &png[at + 8];
#ifdef OVSS_TEST_HAVE_ZLIB
        EXPECT_EQ(crc32(0, &png[at + 4], len + 4), be32(data + len)) << type;
#endif
        if (type == "IHDR") d.width = be32(data), d.height = be32(data + 4), d.depth = data[8], d.colour_type = data[9];
        if (type == "PLTE") d.plte.assign(data, data + len);
        if (type == "IDAT") d.idat.insert(d.idat.end(), data, data + len);
        at += 12 + len;
        if (type == "IEND") break;
    }
    EXPECT_EQ(at, png.size());
    return d;
}

#ifdef OVSS_TEST_HAVE_ZLIB
/// The 8-bit single-channel pixels: inflate, then undo each row's filter (all five types).
cv::Mat pixels(const Decoded& d) {
    std::vector<uint8_t> raw(static_cast<size_t>(d.height) * (d.width + 1));
    uLongf size = raw.size();
    EXPECT_EQ(uncompress(raw.data(), &size, d.idat.data(), d.idat.size()), Z_OK);
    EXPECT_EQ(size, raw.size());
    cv::Mat out(d.height, d.width, CV_8U);
    for (int y = 0; y < d.height; ++y) {
        const uint8_t filter = raw[y * (d.width + 1)];
        const uint8_t* in = &raw[y * (d.width + 1) + 1];
        uint8_t* row = out.ptr<uint8_t>(y);
        const uint8_t* up = y ? out.ptr<uint8_t>(y - 1) : nullptr;
        for (int x = 0; x < d.width; ++x) {
            const int a = x ? row[x - 1] : 0, b = up ? up[x] : 0, c = x && up ? up[x - 1] : 0;
            const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
            const int pred[5] = {0, a, b, (a + b) / 2, pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)};
            row[x] = static_cast<uint8_t>(in[x] + pred[filter]);
        }
    }
    return out;
}
#endif

cv::Mat random_labels(int h, int w, int classes, bool unknown, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> pick(0, classes - 1), coin(0, 9);
    cv::Mat labels(h, w, CV_32S);
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) labels.at<int32_t>(y, x) = unknown && coin(rng) == 0 ? kUnknown : pick(rng);
    return labels;
}

std::vector<uint8_t> read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST(LabelPng, PaletteHasTheClassColoursAndUnknownGrey) {
    const Palette256 p = label_palette(palette(3));
    EXPECT_EQ(p[0], palette(3)[0]);
    EXPECT_EQ(p[2], palette(3)[2]);
    EXPECT_EQ(p[3], (Rgb{0, 0, 0}));
    EXPECT_EQ(p[255], kUnknownColour);
    EXPECT_EQ(label_palette(palette(256))[255], palette(256)[255]);  // 256 classes: 255 is a class
    EXPECT_THROW(label_palette(palette(257)), ConfigError);
}

TEST(LabelPng, EveryEncoderRoundTripsIndicesAndPalette) {
    const cv::Mat labels = random_labels(37, 53, 7, true, 1);
    cv::Mat indices;
    labels.convertTo(indices, CV_8U);
    const Palette256 table = label_palette(palette(7));
    const std::pair<const char*, std::vector<uint8_t>> encoded[] = {
        {"default", encode_palette_png(indices, table)},
        {"minimal", encode_palette_png_minimal(indices, table)},
        {"stored", encode_palette_png_minimal(indices, table, true)}};
    for (const auto& [name, png] : encoded) {
        SCOPED_TRACE(name);
        const Decoded d = parse_png(png);
        EXPECT_EQ(d.width, 53);
        EXPECT_EQ(d.height, 37);
        EXPECT_EQ(d.depth, 8);
        EXPECT_EQ(d.colour_type, 3);  // palette
        ASSERT_EQ(d.plte.size(), 768u);
        for (int i = 0; i < 256; ++i)
            for (int c = 0; c < 3; ++c) EXPECT_EQ(d.plte[i * 3 + c], table[i][c]);
#ifdef OVSS_TEST_HAVE_ZLIB
        EXPECT_EQ(cv::norm(pixels(d), indices, cv::NORM_INF), 0.0);
#endif
        // OpenCV expands the palette: each pixel has its class colour.
        const cv::Mat bgr = cv::imdecode(png, cv::IMREAD_COLOR);
        ASSERT_EQ(bgr.size(), labels.size());
        for (int y = 0; y < labels.rows; ++y)
            for (int x = 0; x < labels.cols; ++x) {
                const Rgb& c = table[labels.at<int32_t>(y, x)];
                ASSERT_EQ(bgr.at<cv::Vec3b>(y, x), cv::Vec3b(c[2], c[1], c[0]));
            }
    }
}

TEST(LabelPng, StoredBlocksSplitLargeImages) {
    cv::Mat indices(300, 500, CV_8U);  // 150300 raw bytes: three stored blocks
    cv::randu(indices, 0, 256);
    const std::vector<uint8_t> png = encode_palette_png_minimal(indices, label_palette(palette(256)), true);
    const cv::Mat bgr = cv::imdecode(png, cv::IMREAD_COLOR);
    ASSERT_EQ(bgr.size(), indices.size());
#ifdef OVSS_TEST_HAVE_ZLIB
    EXPECT_EQ(cv::norm(pixels(parse_png(png)), indices, cv::NORM_INF), 0.0);
#endif
}

TEST(LabelPng, WriteChecksLabelsAndWritesAtomically) {
    const fs::path dir = fs::temp_directory_path() / ("ovss_png_" + std::to_string(::getpid()));
    const cv::Mat labels = random_labels(20, 30, 4, true, 2);
    write_label_png(dir / "sub" / "labels.png", labels, palette(4));
    const std::vector<uint8_t> png = read_file(dir / "sub" / "labels.png");
    EXPECT_EQ(parse_png(png).colour_type, 3);
    EXPECT_EQ(std::distance(fs::directory_iterator(dir / "sub"), fs::directory_iterator()), 1);  // no temp left
    cv::Mat bad = labels.clone();
    bad.at<int32_t>(3, 3) = 4;  // no colour for class 4
    EXPECT_THROW(write_label_png(dir / "bad.png", bad, palette(4)), ConfigError);
    EXPECT_THROW(write_label_png(dir / "big.png", labels, palette(300)), ConfigError);
    EXPECT_FALSE(fs::exists(dir / "bad.png"));
    fs::remove_all(dir);
}
