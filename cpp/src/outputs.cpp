// Output path checks before the work (see ovss/outputs.hpp).
#include "ovss/outputs.hpp"

#include <unistd.h>

#include "ovss/errors.hpp"

namespace ovss {
namespace {

namespace fs = std::filesystem;

bool lexists(const fs::path& p) {
    std::error_code ec;
    return fs::symlink_status(p, ec).type() != fs::file_type::not_found && !ec;
}

bool writable(const fs::path& dir) { return ::access(dir.c_str(), W_OK | X_OK) == 0; }

/// The nearest existing ancestor of ``path`` is a folder this process may create files in.
void check_writable_ancestor(const fs::path& path, const std::string& what) {
    fs::path parent = path.parent_path();
    if (parent.empty()) parent = ".";
    while (!lexists(parent) && parent.has_parent_path() && parent != parent.parent_path()) parent = parent.parent_path();
    if (!lexists(parent)) parent = ".";  // a relative path whose first component is missing
    if (!fs::is_directory(parent))
        throw OutputPathError(what + " '" + path.string() + "': '" + parent.string() + "' is not a folder");
    if (!writable(parent))
        throw OutputPathError(what + " '" + path.string() + "': no permission to write in '" + parent.string() + "'");
}

}  // namespace

void check_output_file(const fs::path& path, const std::string& what) {
    if (path.empty() || path == ".") throw OutputPathError(what + ": empty path");
    if (fs::is_directory(path))
        throw OutputPathError(what + " '" + path.string() + "' is an existing folder, not a file");
    if (lexists(path)) {
        const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
        if (!writable(parent)) throw OutputPathError(what + " '" + path.string() + "': no permission to replace it");
        return;
    }
    check_writable_ancestor(path, what);
}

void check_output_dir(const fs::path& path, const std::string& what) {
    if (path.empty()) throw OutputPathError(what + ": empty path");
    if (lexists(path)) {
        if (!fs::is_directory(path))
            throw OutputPathError(what + " '" + path.string() + "' exists and is not a folder");
        if (!writable(path)) throw OutputPathError(what + " '" + path.string() + "': no permission to write in it");
        return;
    }
    check_writable_ancestor(path, what);
}

}  // namespace ovss
