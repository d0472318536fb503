#include "ovss/cli.hpp"

#include <cctype>
#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "ovss/errors.hpp"
#include "ovss/folder_paths.hpp"
#include "ovss/image.hpp"
#include "ovss/manifest.hpp"

namespace ovss {

Args::Args(int argc, char** argv, const std::set<std::string>& valued, const std::set<std::string>& switches) {
    for (int i = 1; i < argc; ++i) {
        std::string flag = argv[i], value;
        const size_t eq = flag.find('=');
        const bool inline_value = flag.rfind("--", 0) == 0 && eq != std::string::npos;
        if (inline_value) value = flag.substr(eq + 1), flag = flag.substr(0, eq);
        if (switches.count(flag) && !inline_value) {
            values_[flag] = "1";
        } else if (valued.count(flag)) {
            if (!inline_value && i + 1 >= argc) throw ConfigError(flag + " needs a value");
            values_[flag] = inline_value ? value : argv[++i];
        } else {
            throw ConfigError("unknown argument '" + std::string(argv[i]) + "'");
        }
    }
}

std::optional<std::string> Args::get(const std::string& flag) const {
    const auto it = values_.find(flag);
    if (it == values_.end()) return std::nullopt;
    return it->second;
}

std::string Args::require(const std::string& flag) const {
    const auto v = get(flag);
    if (!v) throw ConfigError("the argument " + flag + " is required");
    return *v;
}

int Args::get_int(const std::string& flag, int fallback, int min, int max) const {
    return static_cast<int>(get_int64(flag, fallback, min, max));
}

int64_t Args::get_int64(const std::string& flag, int64_t fallback, int64_t min, int64_t max) const {
    const auto v = get(flag);
    if (!v) return fallback;
    size_t used = 0;
    long long n = 0;
    try {
        n = std::stoll(*v, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != v->size() || v->empty() || std::isspace(static_cast<unsigned char>((*v)[0])) || n < min || n > max) {
        const std::string range = max == 2147483647 ? ">= " + std::to_string(min)
                                                    : "in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
        throw ConfigError(flag + " must be an integer " + range + ", got '" + *v + "'");
    }
    return n;
}

double Args::get_double(const std::string& flag, double fallback, double lo, double hi) const {
    const auto v = get(flag);
    if (!v) return fallback;
    size_t used = 0;
    double x = 0;
    try {
        x = std::stod(*v, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != v->size() || v->empty() || std::isspace(static_cast<unsigned char>((*v)[0])) || !(x >= lo && x <= hi))
        throw ConfigError(flag + " must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                          "], got '" + *v + "'");
    return x;
}

int64_t max_pixels_flag(const Args& args) {
    const int64_t n = args.get_int64("--max-pixels", kDefaultMaxPixels, 0, int64_t{1} << 48);
    limit_decoder_pixels(n);
    return n;
}

namespace {

/// The precision the manifest's ``variants`` maps to a graph file ("" when it has none); the
/// names were checked (relative, inside the folder) by load_manifest.
std::string variant_file(const Manifest& m, const std::string& precision) {
    for (const auto& [p, file] : m.variant_files)
        if (p == precision) return file;
    return "";
}

}  // namespace

void check_model_flags(const Args& args, const std::string& folder) {
    const auto precision = args.get("--precision");
    if (!precision && !args.has("--classes")) return;
    if (precision && !kPrecisions.count(*precision))
        throw ConfigError("--precision must be fp32, fp16 or int8, got '" + *precision + "'");
    const Manifest m = load_manifest(folder);
    if (args.has("--classes")) {
        if (m.vocab_mode == "fixed")
            throw VocabularyError("--classes: this folder was exported with a fixed vocabulary "
                                  "(--vocab-mode fixed); its graph has no text input for other classes");
        throw VocabularyError("--classes: the C++ programs have no text encoder; set class names with "
                              "python -m runtime.infer --classes (or ovss_* with the folder's own vocabulary)");
    }
    if (!precision || *precision == "fp32") return;
    const std::string file = variant_file(m, *precision);
    if (file.empty())
        throw ModelFolderError("this folder has no " + *precision + " variant; make one with python -m "
                               "calibration.calibrate --precision " + *precision);
    throw OvssError("--precision " + *precision + ": the C++ programs run the fp32 graph only; run " + file +
                      " with python -m runtime.infer --precision " + *precision);
}

int guarded_main(const char* usage, const std::function<int(int, char**)>& body, int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
            std::cout << usage;
            return 0;
        }
    }
    try {
        return body(argc, argv);
    } catch (const ConfigError& e) {
        std::cerr << usage << "error: " << e.what() << std::endl;
        return 2;
    } catch (const OvssError& e) {
        std::cerr << "error: " << e.what() << std::endl;
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "error: unexpected failure: " << e.what() << std::endl;
        return 1;
    }
}

}  // namespace ovss
