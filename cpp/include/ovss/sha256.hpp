// File hashing for the manifest's model_sha256 check (OpenSSL libcrypto).
#pragma once

#include <filesystem>
#include <string>

namespace ovss {

/// Lower-case hex sha256 of a file's bytes; throws OvssError when it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

/// Lower-case hex sha256 of ``data``.
std::string sha256_hex(const std::string& data);

}  // namespace ovss
