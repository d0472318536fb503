// manifest.json parsing and validation with nlohmann::json; messages follow runtime/manifest.py.
#include "ovss/manifest.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "ovss/errors.hpp"
#include "ovss/folder_paths.hpp"

namespace ovss {
namespace {

using nlohmann::json;

enum class Kind { Int, Str, List, Dict, Bool };

const char* kind_name(Kind k) {
    switch (k) {
        case Kind::Int: return "int";
        case Kind::Str: return "str";
        case Kind::List: return "list";
        case Kind::Dict: return "dict";
        case Kind::Bool: return "bool";
    }
    return "?";
}

bool is_kind(const json& v, Kind k) {
    switch (k) {
        case Kind::Int: return v.is_number_integer();
        case Kind::Str: return v.is_string();
        case Kind::List: return v.is_array();
        case Kind::Dict: return v.is_object();
        case Kind::Bool: return v.is_boolean();
    }
    return false;
}

/// d[key], which must exist and be of ``kind``; ``where`` prefixes the field name in errors.
const json& require(const json& d, const std::string& key, Kind kind, const std::string& where) {
    if (!d.is_object() || !d.contains(key))
        throw ModelFolderError("manifest is missing '" + where + key + "'");
    const json& v = d.at(key);
    if (!is_kind(v, kind))
        throw ModelFolderError("manifest field '" + where + key + "' has type " +
                               std::string(v.type_name()) + ", expected " + kind_name(kind));
    return v;
}

std::string req_str(const json& d, const std::string& key, const std::string& where = "") {
    return require(d, key, Kind::Str, where).get<std::string>();
}

/// ``v`` as an int: a JSON integer within int's range (never a float, never wrapped).
int as_int(const json& v, const std::string& field) {
    const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(INT_MAX)
                                             : v.is_number_integer() && v.get<int64_t>() >= INT_MIN &&
                                                   v.get<int64_t>() <= INT_MAX;
    if (!fits)
        throw ModelFolderError("manifest field '" + field + "' must be an integer (" + std::to_string(INT_MIN) +
                               ".." + std::to_string(INT_MAX) + "), got " + v.dump());
    return static_cast<int>(v.get<int64_t>());
}

int req_int(const json& d, const std::string& key, const std::string& where = "") {
    return as_int(require(d, key, Kind::Int, where), where + key);
}

/// The finite numbers of a JSON list (NaN / inf refused).
std::vector<double> numbers(const json& list, const std::string& field) {
    std::vector<double> out;
    for (const json& v : list) {
        if (!v.is_number() || !std::isfinite(v.get<double>()))
            throw ModelFolderError("manifest field '" + field + "' must hold finite numbers, got " + list.dump());
        out.push_back(v.get<double>());
    }
    return out;
}

/// The integers of a JSON list (floats such as 224.5 or 224.0 refused, not truncated).
std::vector<int> integers(const json& list, const std::string& field) {
    std::vector<int> out;
    for (const json& v : list) {
        if (!v.is_number_integer())
            throw ModelFolderError("manifest field '" + field + "' must hold integers, got " + list.dump());
        out.push_back(as_int(v, field));
    }
    return out;
}

/// An optional field of ``d``: absent or null -> nullptr; present with another kind -> error.
const json* optional_field(const json& d, const std::string& key, Kind kind, const std::string& where) {
    if (!d.contains(key) || d.at(key).is_null()) return nullptr;
    return &require(d, key, kind, where);
}

/// The JSON nesting depth of ``text`` ([ and { outside strings), refused above kMaxJsonDepth
/// before parsing: deep nesting costs the parser stack and memory, and no manifest needs it.
void check_json_depth(const std::string& text, const std::string& where) {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > kMaxJsonDepth)
                throw ModelFolderError("'" + where + "' nests JSON deeper than " + std::to_string(kMaxJsonDepth) +
                                       " levels: not a manifest");
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
}

PreprocessCfg parse_preprocess(const json& pre) {
    const std::string w = "preprocess.";
    auto size = integers(require(pre, "input_size", Kind::List, w), w + "input_size");
    auto mean = numbers(require(pre, "mean", Kind::List, w), w + "mean");
    auto std = numbers(require(pre, "std", Kind::List, w), w + "std");
    bool ok = size.size() == 2 && mean.size() == 3 && std.size() == 3;
    for (double s : std) ok = ok && s > 0;
    for (int s : size) ok = ok && s > 0;
    if (!ok)
        throw ModelFolderError("manifest preprocess needs input_size [H,W] > 0, 3 means, 3 stds > 0");
    if (size[0] > kMaxInputSide || size[1] > kMaxInputSide)
        throw ModelFolderError("manifest preprocess.input_size " + json(size).dump() + " exceeds " +
                               std::to_string(kMaxInputSide) + " pixels a side");
    PreprocessCfg cfg;
    cfg.input_h = size[0];
    cfg.input_w = size[1];
    for (int c = 0; c < 3; ++c) cfg.mean[c] = mean[c], cfg.std[c] = std[c];
    cfg.feature_stride = req_int(pre, "feature_stride", w);
    if (cfg.feature_stride <= 0) throw ModelFolderError("manifest preprocess.feature_stride must be > 0");
    if (cfg.input_h % cfg.feature_stride || cfg.input_w % cfg.feature_stride)
        throw ModelFolderError("manifest preprocess.feature_stride " + std::to_string(cfg.feature_stride) +
                               " does not divide the input size " + json(size).dump());
    if (pre.contains("input_format")) cfg.input_format = require(pre, "input_format", Kind::Str, w).get<std::string>();
    if (cfg.input_format != "float32-nchw" && cfg.input_format != "uint8-nhwc" && cfg.input_format != "uint8-nchw")
        throw ModelFolderError("manifest preprocess.input_format '" + cfg.input_format +
                               "' is not one of ('float32-nchw', 'uint8-nhwc', 'uint8-nchw')");
    return cfg;
}

std::vector<TensorSpec> parse_specs(const json& d, const std::string& where) {
    if (!d.contains(where) || !d.at(where).is_array() || d.at(where).empty())
        throw ModelFolderError("manifest field '" + where + "' must be a non-empty list");
    std::vector<TensorSpec> specs;
    const std::string w = where + "[].";
    for (const json& t : d.at(where)) {
        TensorSpec s{req_str(t, "name", w), req_str(t, "dtype", w), req_str(t, "meaning", w), {}};
        for (const json& dim : require(t, "shape", Kind::List, w)) {
            // an integer >= 0, or a named (dynamic) axis: a string or null
            if (dim.is_string() || dim.is_null()) s.shape.push_back(-1);
            else if (dim.is_number_integer() && as_int(dim, w + "shape") >= 0) s.shape.push_back(dim.get<int64_t>());
            else throw ModelFolderError("manifest " + where + " '" + s.name + "' has a bad shape dimension " +
                                        dim.dump() + " (an integer >= 0 or an axis name)");
        }
        specs.push_back(std::move(s));
    }
    return specs;
}

std::vector<std::string> parse_classes(const json& d) {
    const json& list = require(d, "classes", Kind::List, "");
    std::vector<std::string> classes;
    for (const json& c : list) {
        if (!c.is_string() || c.get<std::string>().empty())
            throw ModelFolderError("manifest 'classes' must be a non-empty list of names");
        classes.push_back(c.get<std::string>());
    }
    if (classes.empty()) throw ModelFolderError("manifest 'classes' must be a non-empty list of names");
    return classes;
}

WeightsInfo parse_weights(const json& d) {
    const json& w = require(d, "weights", Kind::Dict, "");
    return {req_str(w, "source", "weights."), req_str(w, "sha256", "weights."),
            require(w, "random", Kind::Bool, "weights.").get<bool>()};
}

/// ``score``; absent (older manifests): "probability" for ZegCLIP / CLIP-RC, else "softmax".
std::string parse_score(const json& d, const std::string& method) {
    if (!d.contains("score") || d.at("score").is_null())
        return method == "zegclip" || method == "cliprc" ? "probability" : "softmax";
    const std::string score = require(d, "score", Kind::Str, "").get<std::string>();
    if (score != "softmax" && score != "probability")
        throw ModelFolderError("manifest score '" + score + "' is not one of ('softmax', 'probability')");
    return score;
}

/// ``score_scale``, in (0, 1e6); absent (older manifests): 100 for MaskCLIP without key
/// smoothing (raw cosines, scored softmax(100 x cosine)), else 1.
double parse_score_scale(const json& d) {
    if (!d.contains("score_scale")) {
        const bool maskclip = d.contains("method") && d.at("method") == "maskclip";
        const bool has_cfg = d.contains("method_cfg") && d.at("method_cfg").is_object();
        const json cfg = has_cfg ? d.at("method_cfg") : json::object();
        const bool raw_cosine = maskclip && cfg.contains("key_smoothing") && cfg.at("key_smoothing") == false;
        return raw_cosine ? 100.0 : 1.0;
    }
    const json& k = d.at("score_scale");
    if (!k.is_number() || !(k.get<double>() > 0 && k.get<double>() < 1e6))
        throw ModelFolderError("manifest score_scale must be a number in (0, 1e6), got " + k.dump());
    return k.get<double>();
}

/// The top-level ``seen_bias`` (a number in [0, 1e6)) at ``seen_classes`` (distinct names of
/// ``classes``), 0 elsewhere; empty when either is absent or none (runtime/manifest.py).
std::vector<float> parse_seen_class_bias(const json& d, const std::vector<std::string>& classes) {
    double value = 0.0;
    if (d.contains("seen_bias")) {
        const json& v = d.at("seen_bias");
        if (!v.is_number() || !(v.get<double>() >= 0.0 && v.get<double>() < 1e6))
            throw ModelFolderError("manifest seen_bias must be a number in [0, 1e6), got " + v.dump());
        value = v.get<double>();
    }
    std::vector<std::string> seen;
    if (d.contains("seen_classes")) {
        const json& list = d.at("seen_classes");
        bool ok = list.is_array();
        for (const json& n : ok ? list : json::array()) {
            ok = ok && n.is_string();
            if (ok) seen.push_back(n.get<std::string>());
        }
        if (!ok) throw ModelFolderError("manifest seen_classes must be a list of names, got " + list.dump());
    }
    if (seen.empty()) return {};
    if (value == 0.0) throw ModelFolderError("manifest seen_classes are given but seen_bias is 0");
    std::vector<float> bias(classes.size(), 0.0f);
    for (const std::string& name : seen) {
        const size_t i = static_cast<size_t>(std::find(classes.begin(), classes.end(), name) - classes.begin());
        if (i == classes.size() || bias[i] != 0.0f)
            throw ModelFolderError("manifest seen_classes " + d.at("seen_classes").dump() +
                                   " must be distinct names of 'classes'");
        bias[i] = static_cast<float>(value);
    }
    return bias;
}

/// The optional ``postprocess`` entry (absent or null: host post-processing).
std::optional<PostprocessCfg> parse_postprocess(const json& d) {
    if (!d.contains("postprocess") || d.at("postprocess").is_null()) return std::nullopt;
    const json& post = require(d, "postprocess", Kind::Dict, "");
    const json& hw = require(post, "output_hw", Kind::List, "postprocess.");
    bool ok = hw.size() == 2;
    for (const json& v : hw) ok = ok && v.is_number_integer() && v.get<int64_t>() > 0;
    if (!ok) throw ModelFolderError("manifest postprocess.output_hw must be [H,W] > 0, got " + hw.dump());
    PostprocessCfg cfg{hw[0].get<int>(), hw[1].get<int>(), req_str(post, "labels_dtype", "postprocess.")};
    if (cfg.labels_dtype != "uint8" && cfg.labels_dtype != "int32")
        throw ModelFolderError("manifest postprocess.labels_dtype '" + cfg.labels_dtype +
                               "' is not one of ('uint8', 'int32')");
    return cfg;
}

/// The image input spec, where declared, has the dtype and shape of ``input_format``
/// (runtime/manifest.py _check_image_input); uint8 formats must declare it.
void check_image_input(const Manifest& m) {
    const PreprocessCfg& pre = m.preprocess;
    const bool floats = pre.input_format == "float32-nchw";
    const TensorSpec* spec = nullptr;
    for (const TensorSpec& t : m.inputs)
        if (t.name == "image") spec = &t;
    if (!spec && floats) return;
    const std::string dtype = floats ? "float32" : "uint8";
    const std::vector<int64_t> shape = pre.input_format == "uint8-nhwc"
                                           ? std::vector<int64_t>{1, pre.input_h, pre.input_w, 3}
                                           : std::vector<int64_t>{1, 3, pre.input_h, pre.input_w};
    if (!spec || spec->dtype != dtype || spec->shape != shape) {
        json want = shape, got = spec ? json(spec->shape) : json();
        throw ModelFolderError("manifest input 'image' is " + (spec ? spec->dtype + " " + got.dump() : "missing") +
                               ", but preprocess.input_format '" + pre.input_format + "' needs " + dtype + " " +
                               want.dump());
    }
}

const TensorSpec& find_spec(const std::vector<TensorSpec>& specs, const std::string& name,
                            const char* kind) {
    for (const TensorSpec& s : specs)
        if (s.name == name) return s;
    throw ModelFolderError(std::string("manifest declares no ") + kind + " tensor named '" + name + "'");
}

/// ``text_embeddings_file`` (absent or null: none) and its sha256, required with it.
void parse_text_embeddings(const json& d, Manifest& m) {
    const json* file = optional_field(d, "text_embeddings_file", Kind::Str, "");
    if (!file) return;
    m.text_embeddings_file = file->get<std::string>();
    check_relative_name(*m.text_embeddings_file, "text_embeddings_file");
    if (!d.contains("text_embeddings_sha256") || d.at("text_embeddings_sha256").is_null())
        throw ModelFolderError("manifest has text_embeddings_file but no text_embeddings_sha256 (re-export the "
                               "folder: the embeddings must be verified like the model)");
    m.text_embeddings_sha256 = req_str(d, "text_embeddings_sha256");
    m.text_embeddings_sha256 = check_sha256_text(m.text_embeddings_sha256, "text_embeddings_sha256");
    m.named_files.emplace_back("text_embeddings_file", *m.text_embeddings_file);
}

/// ``variants`` (precision -> {file, sha256}): each file a relative name with a sha256.
void parse_variants(const json& d, Manifest& m) {
    const json* variants = optional_field(d, "variants", Kind::Dict, "");
    if (!variants) return;
    for (const auto& [precision, v] : variants->items()) {
        const std::string w = "variants." + precision + ".";
        const std::string file = req_str(v, "file", w);
        check_relative_name(file, w + "file");
        check_sha256_text(req_str(v, "sha256", w), w + "sha256");
        m.variant_files.emplace_back(precision, file);
        m.named_files.emplace_back(w + "file", file);
    }
}

/// The optional ``text_encoder`` (the C++ programs do not run it, but its files are confined and
/// hashed like the others, and its context length bounded).
void parse_text_encoder(const json& d, Manifest& m) {
    const json* enc = optional_field(d, "text_encoder", Kind::Dict, "");
    if (!enc) return;
    const std::string w = "text_encoder.";
    for (const char* key : {"file", "vocab_file"}) {
        const std::string file = req_str(*enc, key, w), sha_key = std::string(key) == "file" ? "sha256" : "vocab_sha256";
        check_relative_name(file, w + key);
        check_sha256_text(req_str(*enc, sha_key, w), w + sha_key);
        m.named_files.emplace_back(w + key, file);
    }
    if (const json* v = optional_field(*enc, "context_length", Kind::Int, w)) {
        const int n = as_int(*v, w + "context_length");
        if (n < 2 || n > kMaxContextLength)
            throw ModelFolderError("manifest text_encoder.context_length must be in [2, " +
                                   std::to_string(kMaxContextLength) + "], got " + std::to_string(n));
    }
}

/// The method's inference settings (``method_cfg``) the runtime follows; absent fields keep defaults.
/// Fields of the wrong type are refused (a float slide_stride is not truncated).
void parse_method_cfg(const json& mc, Manifest& m) {
    const std::string w = "method_cfg.";
    if (const json* v = optional_field(mc, "slide_stride", Kind::Int, w)) {
        m.slide_stride = as_int(*v, w + "slide_stride");
        if (m.slide_stride <= 0) throw ModelFolderError("manifest method_cfg.slide_stride must be > 0");
    }
    if (const json* v = optional_field(mc, "short_side", Kind::Int, w)) {
        m.short_side = as_int(*v, w + "short_side");
        if (m.short_side < 0 || m.short_side > kMaxInputSide)
            throw ModelFolderError("manifest method_cfg.short_side must be in [0, " + std::to_string(kMaxInputSide) +
                                   "]");
    }
    if (mc.contains("prob_thd") && !mc.at("prob_thd").is_null()) {
        const json& v = mc.at("prob_thd");
        m.prob_thd = v.is_number() ? v.get<double>() : -1.0;
        if (!(m.prob_thd >= 0.0 && m.prob_thd < 1.0))
            throw ModelFolderError("manifest method_cfg.prob_thd must be a number in [0, 1), got " + v.dump());
    }
    if (mc.contains("slide_edge") && !mc.at("slide_edge").is_null()) {
        const json& e = mc.at("slide_edge");
        m.slide_edge = e.is_string() ? e.get<std::string>() : "?";  // "": absent, as in Python
        if (!m.slide_edge.empty() && m.slide_edge != "flush" && m.slide_edge != "grid")
            throw ModelFolderError("manifest method_cfg.slide_edge must be 'flush' or 'grid', got " + e.dump());
    }
    if (const json* v = optional_field(mc, "seen_bias", Kind::List, w)) {
        const std::vector<double> bias = numbers(*v, "method_cfg.seen_bias");
        if (bias.size() != m.classes.size())
            throw ModelFolderError("manifest method_cfg.seen_bias must hold one value per class (" +
                                   std::to_string(m.classes.size()) + "), got " + std::to_string(bias.size()));
        m.seen_bias.assign(bias.begin(), bias.end());
    }
}

}  // namespace

const TensorSpec& Manifest::input(const std::string& name) const {
    return find_spec(inputs, name, "input");
}

const TensorSpec& Manifest::output(const std::string& name) const {
    return find_spec(outputs, name, "output");
}

Manifest manifest_from_json_text(const std::string& text, const std::string& where) {
    if (text.size() > kMaxManifestBytes)
        throw ModelFolderError("'" + where + "' is larger than " + std::to_string(kMaxManifestBytes >> 20) +
                               " MiB: not a manifest");
    check_json_depth(text, where);
    json d;
    try {
        d = json::parse(text);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers such as 1e999
        throw ModelFolderError("'" + where + "' is not valid JSON: " + e.what());
    }
    if (!d.is_object()) throw ModelFolderError("manifest must be a JSON object");
    Manifest m;
    m.format_version = req_int(d, "format_version");
    if (m.format_version != kFormatVersion)
        throw ModelFolderError("manifest format_version " + std::to_string(m.format_version) +
                               " is not supported (" + std::to_string(kFormatVersion) + ")");
    m.preprocess = parse_preprocess(require(d, "preprocess", Kind::Dict, ""));
    m.weights = parse_weights(d);
    m.classes = parse_classes(d);
    m.vocab_mode = req_str(d, "vocab_mode");
    if (m.vocab_mode != "fixed" && m.vocab_mode != "input")
        throw ModelFolderError("manifest vocab_mode '" + m.vocab_mode + "' not in ('fixed', 'input')");
    m.method = req_str(d, "method");
    m.backbone = req_str(d, "backbone");
    m.inputs = parse_specs(d, "inputs");
    m.outputs = parse_specs(d, "outputs");
    m.opset = req_int(d, "opset");
    m.package_version = req_str(d, "package_version");
    m.model_file = req_str(d, "model_file");
    m.model_sha256 = req_str(d, "model_sha256");
    check_relative_name(m.model_file, "model_file");
    m.model_sha256 = check_sha256_text(m.model_sha256, "model_sha256");
    m.named_files.emplace_back("model_file", m.model_file);
    check_image_input(m);
    m.score = parse_score(d, m.method);
    m.score_scale = parse_score_scale(d);
    m.postprocess = parse_postprocess(d);
    m.seen_class_bias = parse_seen_class_bias(d, m.classes);
    parse_text_embeddings(d, m);
    parse_variants(d, m);
    parse_text_encoder(d, m);
    if (const json* mc = optional_field(d, "method_cfg", Kind::Dict, "")) parse_method_cfg(*mc, m);
    return m;
}

Manifest load_manifest(const std::filesystem::path& folder) {
    namespace fs = std::filesystem;
    if (!fs::is_directory(folder))
        throw ModelFolderError("model folder '" + folder.string() + "' does not exist or is not a folder");
    const fs::path path = folder / kManifestFile;
    if (!fs::is_regular_file(path))
        throw ModelFolderError("'" + path.string() + "' is missing: not a deployable folder (run export.build)");
    resolve_in_folder(folder, kManifestFile, "file");  // manifest.json itself
    std::error_code ec;
    if (fs::file_size(path, ec) > kMaxManifestBytes || ec)
        throw ModelFolderError("'" + path.string() + "' is larger than " + std::to_string(kMaxManifestBytes >> 20) +
                               " MiB (or unreadable): not a manifest");
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in) throw ModelFolderError("cannot read '" + path.string() + "'");
    Manifest m = manifest_from_json_text(text.str(), path.string());
    for (const auto& [field, name] : m.named_files) resolve_in_folder(folder, name, field);
    return m;
}

}  // namespace ovss
