// Check an output path before the expensive work (runtime/outputs.py): a program refuses
// ``--out /no/such`` in milliseconds, not after the model ran. The checks create nothing;
// missing parent folders are allowed (the writers create them), as long as the nearest existing
// ancestor is a folder this process may write into.
#pragma once

#include <filesystem>
#include <string>

namespace ovss {

/// ``path`` can be written as a file (replacing a file there, never a folder). ``what`` names
/// it in the error ("--out"). Throws OutputPathError: empty, an existing folder, an ancestor that
/// is a file, or no write permission.
void check_output_file(const std::filesystem::path& path, const std::string& what);

/// ``path`` is a folder this process can write into, or can be created as one.
/// Throws OutputPathError: empty, an existing non-folder, an ancestor that is a file, or no
/// write permission.
void check_output_dir(const std::filesystem::path& path, const std::string& what);

}  // namespace ovss
