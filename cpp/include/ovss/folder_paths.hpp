// Folder confinement: every file a manifest names lies inside its deployable folder
// (runtime/manifest.py). Generation folders (DIR/.gen/<id>/ behind DIR/.current and top-level
// symlinks) are inside; absolute names, ``..`` and symlinks leading out are not.
#pragma once

#include <filesystem>
#include <string>

namespace ovss {

/// Refuse a manifest-named file name that is not a plain relative name: empty, absolute, with a
/// ``..`` component, a NUL byte, or naming the folder itself. ``field`` names the manifest field
/// in the error. Throws ModelFolderError.
void check_relative_name(const std::string& name, const std::string& field);

/// ``folder / name`` with symlinks resolved, after check_relative_name. Refused
/// (ModelFolderError): the real path does not lie under ``folder``'s real path (a symlink, or a
/// symlinked parent, leading out). A file that does not exist yet resolves through its nearest
/// existing ancestor, so the caller can report it missing.
std::filesystem::path resolve_in_folder(const std::filesystem::path& folder, const std::string& name,
                                        const std::string& field);

/// A sha256 field of the manifest (64 hexadecimal digits), lower-cased. Empty or missing is an
/// error, never "skip the check". Throws ModelFolderError naming ``field``.
std::string check_sha256_text(const std::string& digest, const std::string& field);

}  // namespace ovss
