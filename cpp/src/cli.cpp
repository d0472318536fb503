#include "ovss/cli.hpp"

#include <iostream>
#include <stdexcept>

#include "ovss/errors.hpp"

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

int guarded_main(const char* usage, const std::function<int(int, char**)>& body, int argc, char** argv) {
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
