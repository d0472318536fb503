// A tiny --flag VALUE / --switch command-line parser for the programs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>

namespace ovss {

class Args {
public:
    /// Parse argv; ``valued`` flags take one value, ``switches`` none.
    /// Throws ConfigError on an unknown flag or a missing value.
    Args(int argc, char** argv, const std::set<std::string>& valued, const std::set<std::string>& switches);

    bool has(const std::string& flag) const { return values_.count(flag) > 0; }
    std::optional<std::string> get(const std::string& flag) const;
    /// The value of a required flag; throws ConfigError when absent.
    std::string require(const std::string& flag) const;
    /// An integer flag in [min, max] (``fallback`` when absent); throws ConfigError otherwise
    /// (not an integer, out of range, or too large for int).
    int get_int(const std::string& flag, int fallback, int min, int max = 2147483647) const;
    /// A 64-bit integer flag in [min, max] (``fallback`` when absent).
    int64_t get_int64(const std::string& flag, int64_t fallback, int64_t min, int64_t max) const;
    /// A number flag in [lo, hi] (``fallback`` when absent).
    double get_double(const std::string& flag, double fallback, double lo, double hi) const;

private:
    std::map<std::string, std::string> values_;
};

/// Bounds the programs put on their flags (as runtime/cli.py): ``--threads`` in [1, kMaxThreads],
/// ``--stride`` / ``--short-side`` in pixels up to kMaxSidePixels, ``--repeat`` up to kMaxRepeat.
inline constexpr int kMaxThreads = 256;
inline constexpr int kMaxSidePixels = 65536;
inline constexpr int kMaxRepeat = 10000;

/// ``--max-pixels N``: decoded images over N pixels (H*W) are refused, exit 2; 0: no limit;
/// absent: kDefaultMaxPixels (50,000,000, as runtime/image.py). Also limits OpenCV's decoders
/// (limit_decoder_pixels). Throws ConfigError on a bad value.
int64_t max_pixels_flag(const Args& args);

/// The precisions ``--precision`` names (the manifest's ``variants`` hold fp16 / int8 graphs).
inline const std::set<std::string> kPrecisions = {"fp32", "fp16", "int8"};

/// Check ``--precision`` and ``--classes`` against ``folder``'s manifest before the model is
/// loaded. The C++ programs run the fp32 graph (``model_file``) and the folder's own vocabulary:
/// ``--precision fp16|int8`` names the variant file and says to run it with ``runtime.infer``
/// (or that the folder lacks it); ``--classes`` is refused (fixed vocabulary: the graph has no
/// text input; vocabulary as input: no C++ text encoder). Throws ConfigError / ModelFolderError /
/// VocabularyError (one ``error:`` line, exit 2).
void check_model_flags(const Args& args, const std::string& folder);

/// Run a program body with the programs' error policy: ``--help`` / ``-h`` prints ``usage`` to
/// stdout (exit 0); bad arguments print ``usage`` and the error, any OvssError prints one
/// ``error: ...`` line (exit 2), anything else exits 1.
int guarded_main(const char* usage, const std::function<int(int, char**)>& body, int argc, char** argv);

}  // namespace ovss
