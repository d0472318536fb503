// Minimal .npy reading and writing: little-endian, C order, f4/f8/i4/i8/u1, no pickles.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ovss {

struct NpyArray {
    std::string descr;            ///< numpy dtype string: "<f4", "<f8", "<i4", "<i8" or "|u1"
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;   ///< numel() * itemsize raw little-endian bytes

    int64_t numel() const;
    /// The values as float32 (f4 as is; f8 rounded); throws OvssError for integer dtypes.
    std::vector<float> to_float() const;
    /// The values as double (f4 and f8 only).
    std::vector<double> to_double() const;
    /// The values as int32 (i4 as is); throws OvssError otherwise.
    std::vector<int32_t> to_int32() const;
};

/// Read ``path``; throws OvssError naming the file and what is wrong (missing, bad magic,
/// unsupported dtype or Fortran order, truncated data).
NpyArray read_npy(const std::filesystem::path& path);

/// Write ``array`` as .npy version 1.0.
void write_npy(const std::filesystem::path& path, const NpyArray& array);

/// Convenience: a float32 / int32 array of ``shape`` from values.
NpyArray make_npy(const std::vector<float>& values, std::vector<int64_t> shape);
NpyArray make_npy(const std::vector<int32_t>& values, std::vector<int64_t> shape);

}  // namespace ovss
