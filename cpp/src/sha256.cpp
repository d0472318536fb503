// sha256 through OpenSSL's EVP interface.
#include "ovss/sha256.hpp"

#include <fstream>
#include <memory>
#include <vector>

#include <openssl/evp.h>

#include "ovss/errors.hpp"

namespace ovss {
namespace {

using Ctx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

Ctx new_ctx() {
    Ctx ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
        throw OvssError("OpenSSL cannot start a sha256 digest");
    return ctx;
}

std::string finish(EVP_MD_CTX* ctx) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx, digest, &len) != 1) throw OvssError("OpenSSL sha256 failed");
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < len; ++i) out += {hex[digest[i] >> 4], hex[digest[i] & 15]};
    return out;
}

}  // namespace

std::string sha256_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw OvssError("cannot read '" + path.string() + "' to hash it");
    Ctx ctx = new_ctx();
    std::vector<char> buf(1 << 22);
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        if (in.gcount() > 0) EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(in.gcount()));
    }
    if (in.bad()) throw OvssError("error reading '" + path.string() + "'");
    return finish(ctx.get());
}

std::string sha256_hex(const std::string& data) {
    Ctx ctx = new_ctx();
    EVP_DigestUpdate(ctx.get(), data.data(), data.size());
    return finish(ctx.get());
}

}  // namespace ovss
