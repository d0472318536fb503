// Palette-mode PNG encoding: libpng when available, else a minimal encoder (see ovss/png.hpp).
#include "ovss/png.hpp"

#include <algorithm>
#include <array>
#include <fstream>
#include <string>

#ifdef OVSS_HAVE_LIBPNG
#include <png.h>
#endif
#ifdef OVSS_HAVE_ZLIB
#include <zlib.h>
#endif

#include "ovss/errors.hpp"
#include "ovss/label_map.hpp"

namespace ovss {
namespace {

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(v >> shift));
}

uint32_t crc32_of(const uint8_t* data, size_t n, uint32_t crc = 0xffffffffu) {
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xff] ^ (crc >> 8);
    return crc;
}

/// One chunk: length, type, data, CRC of type + data.
void put_chunk(std::vector<uint8_t>& out, const char type[5], const std::vector<uint8_t>& data) {
    put_u32(out, static_cast<uint32_t>(data.size()));
    const size_t at = out.size();
    out.insert(out.end(), type, type + 4);
    out.insert(out.end(), data.begin(), data.end());
    put_u32(out, crc32_of(&out[at], out.size() - at) ^ 0xffffffffu);
}

/// A zlib stream of ``raw`` in stored (uncompressed) deflate blocks: needs no zlib.
std::vector<uint8_t> zlib_stored(const std::vector<uint8_t>& raw) {
    std::vector<uint8_t> out = {0x78, 0x01};
    uint32_t a = 1, b = 0;  // Adler-32
    for (uint8_t byte : raw) a = (a + byte) % 65521, b = (b + a) % 65521;
    size_t pos = 0;
    do {
        const size_t n = std::min<size_t>(65535, raw.size() - pos);
        out.push_back(pos + n == raw.size() ? 1 : 0);  // BFINAL, BTYPE 00 (stored)
        const uint16_t len = static_cast<uint16_t>(n), nlen = static_cast<uint16_t>(~len);
        out.insert(out.end(), {static_cast<uint8_t>(len), static_cast<uint8_t>(len >> 8),
                               static_cast<uint8_t>(nlen), static_cast<uint8_t>(nlen >> 8)});
        out.insert(out.end(), raw.begin() + pos, raw.begin() + pos + n);
        pos += n;
    } while (pos < raw.size());
    put_u32(out, (b << 16) | a);
    return out;
}

/// A zlib stream of ``raw``: compressed where the build has zlib, else stored.
std::vector<uint8_t> zlib_stream(const std::vector<uint8_t>& raw, bool stored) {
#ifdef OVSS_HAVE_ZLIB
    if (stored) return zlib_stored(raw);
    uLongf size = compressBound(static_cast<uLong>(raw.size()));
    std::vector<uint8_t> out(size);
    if (compress2(out.data(), &size, raw.data(), static_cast<uLong>(raw.size()), 6) != Z_OK)
        throw OvssError("zlib could not compress the PNG data");
    out.resize(size);
    return out;
#else
    (void)stored;
    return zlib_stored(raw);
#endif
}

void check_indices(const cv::Mat& indices) {
    if (indices.type() != CV_8U || indices.empty())
        throw ConfigError("a palette PNG needs a non-empty HxW uint8 index image");
}

#ifdef OVSS_HAVE_LIBPNG
void append_bytes(png_structp png, png_bytep data, png_size_t n) {
    auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
    out->insert(out->end(), data, data + n);
}

void no_flush(png_structp) {}

/// libpng's error path longjmps here: only trivially destructible locals live in this frame.
bool libpng_write(png_structp png, png_infop info, const cv::Mat& indices, const png_color* colours,
                  std::vector<uint8_t>* out) {
    if (setjmp(png_jmpbuf(png))) return false;
    png_set_write_fn(png, out, append_bytes, no_flush);
    png_set_IHDR(png, info, static_cast<png_uint_32>(indices.cols), static_cast<png_uint_32>(indices.rows), 8,
                 PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_PLTE(png, info, colours, 256);
    png_write_info(png, info);
    for (int y = 0; y < indices.rows; ++y) png_write_row(png, indices.ptr<uint8_t>(y));
    png_write_end(png, info);
    return true;
}
#endif

}  // namespace

Palette256 label_palette(const std::vector<Rgb>& colours) {
    if (colours.size() > 256)
        throw ConfigError("a label PNG holds at most 256 classes, got " + std::to_string(colours.size()));
    Palette256 table{};
    std::copy(colours.begin(), colours.end(), table.begin());
    if (colours.size() <= static_cast<size_t>(kUnknown)) table[kUnknown] = kUnknownColour;
    return table;
}

std::vector<uint8_t> encode_palette_png_minimal(const cv::Mat& indices, const Palette256& palette, bool stored) {
    check_indices(indices);
    std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}, ihdr, plte, raw;
    put_u32(ihdr, static_cast<uint32_t>(indices.cols));
    put_u32(ihdr, static_cast<uint32_t>(indices.rows));
    ihdr.insert(ihdr.end(), {8, 3, 0, 0, 0});  // 8 bits, palette, deflate, adaptive filters, no interlace
    for (const Rgb& c : palette) plte.insert(plte.end(), c.begin(), c.end());
    raw.reserve(static_cast<size_t>(indices.rows) * (indices.cols + 1));
    for (int y = 0; y < indices.rows; ++y) {
        raw.push_back(0);  // filter: none (label maps are runs; they compress well as they are)
        raw.insert(raw.end(), indices.ptr<uint8_t>(y), indices.ptr<uint8_t>(y) + indices.cols);
    }
    put_chunk(out, "IHDR", ihdr);
    put_chunk(out, "PLTE", plte);
    put_chunk(out, "IDAT", zlib_stream(raw, stored));
    put_chunk(out, "IEND", {});
    return out;
}

bool png_uses_libpng() {
#ifdef OVSS_HAVE_LIBPNG
    return true;
#else
    return false;
#endif
}

std::vector<uint8_t> encode_palette_png(const cv::Mat& indices, const Palette256& palette) {
#ifdef OVSS_HAVE_LIBPNG
    check_indices(indices);
    png_color colours[256];
    for (int i = 0; i < 256; ++i) colours[i] = {palette[i][0], palette[i][1], palette[i][2]};
    std::vector<uint8_t> out;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    const bool ok = info && libpng_write(png, info, indices, colours, &out);
    png_destroy_write_struct(&png, &info);
    if (!ok) throw OvssError("libpng could not encode the label PNG");
    return out;
#else
    return encode_palette_png_minimal(indices, palette);
#endif
}

void write_label_png(const std::filesystem::path& path, const cv::Mat& labels, const std::vector<Rgb>& colours) {
    const Palette256 table = label_palette(colours);
    if (labels.type() != CV_32S) throw ConfigError("a label PNG needs a CV_32S label map");
    cv::Mat indices(labels.size(), CV_8U);
    for (int y = 0; y < labels.rows; ++y) {
        const int32_t* in = labels.ptr<int32_t>(y);
        uint8_t* out = indices.ptr<uint8_t>(y);
        for (int x = 0; x < labels.cols; ++x) {
            const bool ok = (in[x] >= 0 && static_cast<size_t>(in[x]) < colours.size()) || in[x] == kUnknown;
            if (!ok) throw ConfigError("label " + std::to_string(in[x]) + " has no colour in the label PNG");
            out[x] = static_cast<uint8_t>(in[x]);
        }
    }
    write_file_atomic(path, encode_palette_png(indices, table));
}

void write_file_atomic(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
    namespace fs = std::filesystem;
    const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
    std::error_code ec;
    fs::create_directories(parent, ec);
    const fs::path tmp = parent / ("." + path.filename().string() + ".tmp");
    {
        std::ofstream out(tmp, std::ios::binary);
        out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        if (!out) {
            fs::remove(tmp, ec);
            throw OvssError("cannot write '" + path.string() + "'");
        }
    }
    fs::rename(tmp, path, ec);
    if (ec) {
        fs::remove(tmp, ec);
        throw OvssError("cannot write '" + path.string() + "': " + ec.message());
    }
}

}  // namespace ovss
