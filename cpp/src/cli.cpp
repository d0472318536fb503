#include "ovss/cli.hpp"

#include <cstring>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "ovss/errors.hpp"
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

int Args::get_int(const std::string& flag, int fallback, int min) const {
    const auto v = get(flag);
    if (!v) return fallback;
    size_t used = 0;
    int n = 0;
    try {
        n = std::stoi(*v, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != v->size() || n < min)
        throw ConfigError(flag + " must be an integer >= " + std::to_string(min) + ", got '" + *v + "'");
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
    if (used != v->size() || !(x >= lo && x <= hi))
        throw ConfigError(flag + " must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                          "], got '" + *v + "'");
    return x;
}

namespace {

/// The precision the manifest's ``variants`` maps to a graph file ("" when it has none).
std::string variant_file(const std::filesystem::path& folder, const std::string& precision) {
    std::ifstream in(folder / "manifest.json");
    const auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.contains("variants") || !j["variants"].is_object()) return "";
    const auto& v = j["variants"];
    if (!v.contains(precision) || !v[precision].contains("file")) return "";
    return v[precision]["file"].is_string() ? v[precision]["file"].get<std::string>() : "";
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
    const std::string file = variant_file(folder, *precision);
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
