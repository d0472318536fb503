// Folder confinement of manifest-named files (see ovss/folder_paths.hpp).
#include "ovss/folder_paths.hpp"

#include <algorithm>
#include <cctype>

#include "ovss/errors.hpp"

namespace ovss {
namespace {

namespace fs = std::filesystem;

/// Whether ``path`` is ``root`` or lies under it (component-wise, both already real paths).
bool is_under(const fs::path& path, const fs::path& root) {
    auto p = path.begin();
    for (auto r = root.begin(); r != root.end(); ++r, ++p) {
        if (r->empty()) continue;  // a trailing separator
        if (p == path.end() || *p != *r) return false;
    }
    return true;
}

}  // namespace

void check_relative_name(const std::string& name, const std::string& field) {
    const std::string where = "manifest " + field + " '" + name + "'";
    if (name.empty()) throw ModelFolderError("manifest " + field + " is empty: it must name a file in the folder");
    if (name.find('\0') != std::string::npos) throw ModelFolderError("manifest " + field + " holds a NUL byte");
    const fs::path p(name);
    if (p.is_absolute() || p.has_root_name() || p.has_root_directory())
        throw ModelFolderError(where + " is an absolute path: files must lie inside the model folder");
    bool named = false;
    for (const fs::path& part : p) {
        if (part == "..") throw ModelFolderError(where + " has a '..' component: files must lie inside the model folder");
        named = named || (part != "." && !part.empty());
    }
    if (!named) throw ModelFolderError(where + " names the folder itself, not a file in it");
}

fs::path resolve_in_folder(const fs::path& folder, const std::string& name, const std::string& field) {
    check_relative_name(name, field);
    std::error_code ec;
    const fs::path root = fs::canonical(folder, ec);
    if (ec) throw ModelFolderError("model folder '" + folder.string() + "' cannot be resolved: " + ec.message());
    const fs::path real = fs::weakly_canonical(root / name, ec);
    if (ec) throw ModelFolderError("manifest " + field + " '" + name + "' cannot be resolved: " + ec.message());
    if (!is_under(real, root) || real == root)
        throw ModelFolderError("manifest " + field + " '" + name + "' resolves to '" + real.string() +
                               "', outside the model folder '" + root.string() + "' (a symlink leading out)");
    return real;
}

std::string check_sha256_text(const std::string& digest, const std::string& field) {
    if (digest.empty())
        throw ModelFolderError("manifest " + field + " is empty: every file needs its sha256 (re-export the folder)");
    const bool hex = std::all_of(digest.begin(), digest.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
    if (digest.size() != 64 || !hex)
        throw ModelFolderError("manifest " + field + " '" + digest.substr(0, 80) +
                               "' is not a sha256 (64 hex digits)");
    std::string lower = digest;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return lower;
}

}  // namespace ovss
