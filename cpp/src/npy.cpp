// Minimal .npy reader/writer (format versions 1-3, little-endian, C order), no pickles.
#include "ovss/npy.hpp"

#include <cstring>
#include <fstream>
#include <sstream>

#include "ovss/errors.hpp"

namespace ovss {
namespace {

const char kMagic[] = "\x93NUMPY";

int itemsize(const std::string& descr) {
    if (descr == "<f4" || descr == "<i4") return 4;
    if (descr == "<f8" || descr == "<i8") return 8;
    if (descr == "|u1" || descr == "<u1") return 1;
    return 0;
}

/// The text after ``'key':`` in the header dict, trimmed of leading spaces.
std::string field(const std::string& header, const std::string& key, const std::string& where) {
    const size_t at = header.find("'" + key + "'");
    if (at == std::string::npos) throw OvssError(where + ": npy header has no '" + key + "'");
    size_t colon = header.find(':', at);
    if (colon == std::string::npos) throw OvssError(where + ": malformed npy header");
    size_t start = header.find_first_not_of(' ', colon + 1);
    return start == std::string::npos ? std::string() : header.substr(start);
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& where) {
    if (text.empty() || text[0] != '(') throw OvssError(where + ": malformed npy shape");
    const size_t close = text.find(')');
    if (close == std::string::npos) throw OvssError(where + ": malformed npy shape");
    std::vector<int64_t> shape;
    std::stringstream s(text.substr(1, close - 1));
    std::string part;
    while (std::getline(s, part, ',')) {
        if (part.find_first_not_of(' ') == std::string::npos) continue;
        try {
            shape.push_back(std::stoll(part));
        } catch (const std::exception&) {
            throw OvssError(where + ": malformed npy shape '" + text.substr(0, close + 1) + "'");
        }
        if (shape.back() < 0) throw OvssError(where + ": negative npy dimension");
    }
    return shape;
}

std::string read_header(std::ifstream& in, const std::string& where) {
    char magic[6];
    unsigned char version[2];
    if (!in.read(magic, 6) || std::memcmp(magic, kMagic, 6) != 0)
        throw OvssError(where + ": not a .npy file (bad magic)");
    if (!in.read(reinterpret_cast<char*>(version), 2) || version[0] < 1 || version[0] > 3)
        throw OvssError(where + ": unsupported .npy version");
    unsigned char len_bytes[4] = {0, 0, 0, 0};
    const int len_size = version[0] == 1 ? 2 : 4;
    if (!in.read(reinterpret_cast<char*>(len_bytes), len_size)) throw OvssError(where + ": truncated .npy header");
    uint32_t len = 0;
    for (int i = len_size - 1; i >= 0; --i) len = (len << 8) | len_bytes[i];
    std::string header(len, '\0');
    if (!in.read(header.data(), len)) throw OvssError(where + ": truncated .npy header");
    return header;
}

/// The header's shape must fit the bytes left in the file: a hostile header claiming a huge
/// array is refused before anything is allocated (and without overflow).
void check_data_size(std::ifstream& in, const NpyArray& a, const std::string& where) {
    const std::streampos at = in.tellg();
    in.seekg(0, std::ios::end);
    const std::streamoff left = in.tellg() - at;
    in.seekg(at);
    uint64_t bytes = static_cast<uint64_t>(itemsize(a.descr));
    for (int64_t d : a.shape) {
        if (d != 0 && bytes > static_cast<uint64_t>(left) / static_cast<uint64_t>(d))
            throw OvssError(where + ": npy data truncated: npy shape claims more data than the file holds (" + std::to_string(left) +
                            " bytes)");
        bytes *= static_cast<uint64_t>(d);
    }
    if (bytes > static_cast<uint64_t>(left))
        throw OvssError(where + ": truncated .npy data (expected " + std::to_string(bytes) + " bytes)");
}

template <class T>
std::vector<T> copy_as(const NpyArray& a) {
    std::vector<T> out(static_cast<size_t>(a.numel()));
    std::memcpy(out.data(), a.bytes.data(), out.size() * sizeof(T));
    return out;
}

}  // namespace

int64_t NpyArray::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

std::vector<float> NpyArray::to_float() const {
    if (descr == "<f4") return copy_as<float>(*this);
    if (descr == "<f8") {
        std::vector<double> d = copy_as<double>(*this);
        return std::vector<float>(d.begin(), d.end());
    }
    throw OvssError("npy dtype " + descr + " is not float");
}

std::vector<double> NpyArray::to_double() const {
    if (descr == "<f8") return copy_as<double>(*this);
    if (descr == "<f4") {
        std::vector<float> f = copy_as<float>(*this);
        return std::vector<double>(f.begin(), f.end());
    }
    throw OvssError("npy dtype " + descr + " is not float");
}

std::vector<int32_t> NpyArray::to_int32() const {
    if (descr == "<i4") return copy_as<int32_t>(*this);
    throw OvssError("npy dtype " + descr + " is not int32");
}

NpyArray read_npy(const std::filesystem::path& path) {
    const std::string where = "'" + path.string() + "'";
    std::ifstream in(path, std::ios::binary);
    if (!in) throw OvssError(where + " does not exist or cannot be read");
    const std::string header = read_header(in, where);
    NpyArray a;
    const std::string descr = field(header, "descr", where);
    a.descr = descr.size() > 4 ? descr.substr(1, 3) : descr;
    if (descr.size() < 5 || itemsize(a.descr) == 0)
        throw OvssError(where + ": unsupported npy dtype " + descr.substr(0, descr.find(',')) +
                        " (need little-endian f4, f8, i4, i8 or u1)");
    if (field(header, "fortran_order", where).rfind("False", 0) != 0)
        throw OvssError(where + ": Fortran-order .npy is not supported (save a C-order array)");
    a.shape = parse_shape(field(header, "shape", where), where);
    check_data_size(in, a, where);
    a.bytes.resize(static_cast<size_t>(a.numel()) * itemsize(a.descr));
    if (!in.read(reinterpret_cast<char*>(a.bytes.data()), static_cast<std::streamsize>(a.bytes.size())))
        throw OvssError(where + ": truncated .npy data (expected " + std::to_string(a.bytes.size()) + " bytes)");
    return a;
}

void write_npy(const std::filesystem::path& path, const NpyArray& array) {
    std::string shape = "(";
    for (int64_t d : array.shape) shape += std::to_string(d) + ", ";
    if (array.shape.size() > 1) shape.resize(shape.size() - 2);
    else if (array.shape.size() == 1) shape.resize(shape.size() - 1);
    shape += ")";
    std::string header = "{'descr': '" + array.descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
    const size_t unpadded = 6 + 2 + 2 + header.size() + 1;
    header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
    std::error_code ec;
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
    std::ofstream out(path, std::ios::binary);
    const uint16_t len = static_cast<uint16_t>(header.size());
    const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
    out.write(kMagic, 6).write("\x01\x00", 2).write(len_bytes, 2).write(header.data(), header.size());
    out.write(reinterpret_cast<const char*>(array.bytes.data()), static_cast<std::streamsize>(array.bytes.size()));
    if (!out) throw OvssError("cannot write '" + path.string() + "'");
}

NpyArray make_npy(const std::vector<float>& values, std::vector<int64_t> shape) {
    NpyArray a{"<f4", std::move(shape), std::vector<uint8_t>(values.size() * 4)};
    std::memcpy(a.bytes.data(), values.data(), a.bytes.size());
    return a;
}

NpyArray make_npy(const std::vector<int32_t>& values, std::vector<int64_t> shape) {
    NpyArray a{"<i4", std::move(shape), std::vector<uint8_t>(values.size() * 4)};
    std::memcpy(a.bytes.data(), values.data(), a.bytes.size());
    return a;
}

}  // namespace ovss
