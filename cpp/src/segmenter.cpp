// Segmenter: validation, whole/slide, backend, upsample + argmax (runtime/segmenter.py).
#include "ovss/segmenter.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>
#include <utility>

#include "ovss/errors.hpp"
#include "ovss/image.hpp"
#include "ovss/io_names.hpp"
#include "ovss/npy.hpp"
#include "ovss/label_map.hpp"
#include "ovss/preprocess.hpp"
#include "ovss/sha256.hpp"
#include "ovss/windows.hpp"

namespace ovss {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

/// numpy's pairwise summation (the add.reduce inner loop), in T, so norms match it bit for bit.
template <class T>
T pairwise_sum(const T* a, int64_t n) {
    if (n < 8) {
        T res = 0;
        for (int64_t i = 0; i < n; ++i) res += a[i];
        return res;
    }
    if (n <= 128) {
        T r[8];
        for (int j = 0; j < 8; ++j) r[j] = a[j];
        int64_t i = 8;
        for (; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; ++j) r[j] += a[i + j];
        T res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; ++i) res += a[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

/// Rows of ``emb`` [rows, dim] divided by their L2 norms, computed in T as numpy does, as float32.
template <class T>
std::vector<float> l2_normalize_rows(const std::vector<T>& emb, int64_t rows, int64_t dim) {
    std::vector<float> out(emb.size());
    std::vector<T> sq(static_cast<size_t>(dim));
    for (int64_t r = 0; r < rows; ++r) {
        const T* row = &emb[r * dim];
        for (int64_t i = 0; i < dim; ++i) {
            if (!std::isfinite(row[i])) throw VocabularyError("embeddings contain non-finite values or all-zero rows");
            sq[i] = row[i] * row[i];
        }
        const T norm = std::sqrt(pairwise_sum(sq.data(), dim));
        if (norm == 0) throw VocabularyError("embeddings contain non-finite values or all-zero rows");
        for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = static_cast<float>(row[i] / norm);
    }
    return out;
}

/// classes_present and unknown_pixels of r.labels.
void summarise_labels(SegResult& r) {
    std::vector<int64_t> count(std::max<size_t>(r.classes.size(), kUnknown + 1), 0);
    for (int y = 0; y < r.labels.rows; ++y) {
        const int32_t* row = r.labels.ptr<int32_t>(y);
        for (int x = 0; x < r.labels.cols; ++x) ++count.at(static_cast<size_t>(row[x]));
    }
    for (size_t c = 0; c < r.classes.size(); ++c)
        if (count[c]) r.classes_present.push_back(r.classes[c]);
    if (r.classes.size() <= static_cast<size_t>(kUnknown)) r.unknown_pixels = count[kUnknown];
}

std::string join(const std::vector<std::string>& v) {
    std::string s = "(";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", '" : "'") + v[i] + "'";
    return s + ")";
}

}  // namespace

Segmenter::Segmenter(const fs::path& folder, SegmenterOptions options)
    : folder_(folder), options_(std::move(options)), manifest_(load_manifest(folder)) {
    const std::string& mode = options_.mode;
    if (mode != "auto" && mode != "whole" && mode != "slide")
        throw ConfigError("mode must be one of auto, whole, slide, got '" + mode + "'");
    const PreprocessCfg& pre = manifest_.preprocess;
    if (pre.input_format != "float32-nchw")
        throw ModelFolderError("preprocess.input_format '" + pre.input_format +
                               "' (uint8 image input) is not supported by the C++ runtime yet: export the "
                               "folder with --input-format float32-nchw");
    if (pre.input_h != pre.input_w)
        throw ModelFolderError("only square inputs are supported, manifest has " + std::to_string(pre.input_h) +
                               "x" + std::to_string(pre.input_w));
    // The method's own slide step (recorded by the exporter) is the default, as in Python.
    if (options_.stride <= 0)
        options_.stride = manifest_.slide_stride > 0 ? manifest_.slide_stride
                                                     : default_stride(pre.input_h, pre.feature_stride);
    if (options_.short_side < -1) throw ConfigError("short_side must be >= 0 (or -1: the manifest's)");
    short_side_ = options_.short_side >= 0 ? options_.short_side : manifest_.short_side;
    if (!(options_.score_threshold >= 0.0 && options_.score_threshold < 1.0))
        throw ConfigError("score threshold must be in [0, 1), got " + std::to_string(options_.score_threshold));
    score_kind_ = parse_score_kind(manifest_.score);
    check_class_count(manifest_.classes.size());
    backend_ = open_backend(options_.backend, model_path(), options_.backend_options);
    classes_ = manifest_.classes;
    check_graph_io();
    if (manifest_.vocab_mode == "input") load_default_vocabulary();
}

void Segmenter::check_class_count(size_t classes) const {
    if (options_.score_threshold > 0 && classes > static_cast<size_t>(kUnknown))
        throw ConfigError("a score threshold labels unknown pixels 255: at most 255 classes, got " +
                          std::to_string(classes));
}

fs::path Segmenter::model_path() const {
    const fs::path path = folder_ / manifest_.model_file;
    if (!fs::is_regular_file(path))
        throw ModelFolderError("model file '" + path.string() + "' named by the manifest is missing");
    if (options_.verify && !manifest_.model_sha256.empty() && sha256_file(path) != manifest_.model_sha256)
        throw ModelFolderError("'" + path.string() + "' does not match the manifest's sha256: corrupt or modified");
    return path;
}

void Segmenter::check_graph_io() const {
    std::vector<std::string> want_in, want_out;
    for (const TensorSpec& t : manifest_.inputs) want_in.push_back(t.name);
    for (const TensorSpec& t : manifest_.outputs) want_out.push_back(t.name);
    const auto got_in = backend_->input_names(), got_out = backend_->output_names();
    const std::set<std::string> have(got_out.begin(), got_out.end());
    bool ok = got_in == want_in;
    for (const std::string& n : want_out) ok = ok && have.count(n);
    if (!ok)
        throw ModelFolderError("model inputs " + join(got_in) + " / outputs " + join(got_out) +
                               " do not match the manifest's " + join(want_in) + " / " + join(want_out));
}

void Segmenter::load_default_vocabulary() {
    const std::string name = manifest_.text_embeddings_file.value_or("");
    const fs::path path = folder_ / name;
    if (name.empty() || !fs::is_regular_file(path))
        throw ModelFolderError("vocab_mode 'input' needs the text embeddings file '" + name + "'");
    NpyArray emb;
    try {
        emb = read_npy(path);
    } catch (const OvssError& e) {
        throw ModelFolderError(std::string("cannot read text embeddings: ") + e.what());
    }
    const int64_t dim = manifest_.input(io_names::kTextEmbeddings).shape.back();
    const int64_t rows = static_cast<int64_t>(classes_.size());
    if (emb.shape != std::vector<int64_t>{rows, dim} || (emb.descr != "<f4" && emb.descr != "<f8"))
        throw VocabularyError("embeddings must be float [" + std::to_string(rows) + ", " + std::to_string(dim) +
                              "], got " + emb.descr + " " + Tensor{emb.shape, {}}.shape_str());
    // float64 files are normalised in float64 (as numpy would), then rounded to float32.
    text_ = Tensor{{rows, dim}, emb.descr == "<f8" ? l2_normalize_rows(emb.to_double(), rows, dim)
                                                   : l2_normalize_rows(emb.to_float(), rows, dim)};
}

void Segmenter::set_vocabulary(const std::vector<std::string>& classes, const std::vector<float>& embeddings) {
    if (manifest_.vocab_mode != "input")
        throw VocabularyError("this model was exported with a fixed vocabulary (--vocab-mode fixed)");
    const int64_t dim = manifest_.input(io_names::kTextEmbeddings).shape.back();
    const int64_t rows = static_cast<int64_t>(classes.size());
    if (classes.empty() || static_cast<int64_t>(embeddings.size()) != rows * dim)
        throw VocabularyError("embeddings must be float [" + std::to_string(rows) + ", " + std::to_string(dim) +
                              "], got " + std::to_string(embeddings.size()) + " values");
    check_class_count(classes.size());
    text_ = Tensor{{rows, dim}, l2_normalize_rows(embeddings, rows, dim)};
    classes_ = classes;
}

Tensor Segmenter::run_model(const Tensor& image) {
    Feeds feeds{{io_names::kImage, &image}};
    if (!text_.shape.empty()) feeds.emplace_back(io_names::kTextEmbeddings, &text_);
    Tensor out = backend_->run(feeds, io_names::kLogits);
    if (out.shape.size() != 4 || out.shape[0] != 1)
        throw ModelFolderError("model logits must be [1,C,h,w], got " + out.shape_str());
    if (out.shape[1] != static_cast<int64_t>(classes_.size()))
        throw ModelFolderError("model returns " + std::to_string(out.shape[1]) + " class scores but the vocabulary has " +
                               std::to_string(classes_.size()) + " classes");
    out.shape.erase(out.shape.begin());
    return out;
}

SegResult Segmenter::operator()(const cv::Mat& image) {
    const auto t0 = Clock::now();
    const cv::Mat original = as_rgb_uint8(image);
    const PreprocessCfg& pre = manifest_.preprocess;
    const int out_h = original.rows, out_w = original.cols;
    // The method's test resize (as Python): work at the short side, labels at the input's size.
    cv::Mat rgb = original;
    if (short_side_ > 0) {
        const auto [h, w] = short_side_size(out_h, out_w, short_side_);
        rgb = resize_rgb(original, h, w);
    }
    SegResult r;
    r.mode = options_.mode;
    if (r.mode == "auto") r.mode = rgb.rows <= pre.input_h && rgb.cols <= pre.input_w ? "whole" : "slide";
    double span_h = out_h, span_w = out_w;
    auto t1 = t0;
    if (r.mode == "whole") {
        const Tensor x = normalize(resize_rgb(rgb, pre.input_h, pre.input_w), pre);
        t1 = Clock::now();
        r.logits = run_model(x);
        r.windows = 1;
    } else {
        const WindowPlan plan = plan_windows(rgb.rows, rgb.cols, pre.input_h, options_.stride, pre.feature_stride);
        Tensor x = Tensor::zeros({1, 3, plan.padded_h, plan.padded_w});  // zero = the mean colour
        normalize_into(rgb, pre, x);
        t1 = Clock::now();
        r.logits = stitch(plan, x, [this](const Tensor& w) { return run_model(w); });
        r.windows = static_cast<int>(plan.boxes.size());
        span_h = plan.padded_h * (static_cast<double>(out_h) / rgb.rows);
        span_w = plan.padded_w * (static_cast<double>(out_w) / rgb.cols);
    }
    const auto t2 = Clock::now();
    r.classes = classes_;
    LabelOptions lo{score_kind_, manifest_.score_scale, options_.score_threshold, manifest_.prob_thd,
                    options_.with_scores, options_.label_method};
    LabelMap lm = label_map(r.logits, out_h, out_w, span_h, span_w, lo);
    r.labels = lm.labels, r.scores = lm.scores;
    r.postprocess = lm.fast ? "fast" : "exact";
    summarise_labels(r);
    const auto t3 = Clock::now();
    r.timings = {ms_between(t0, t1), ms_between(t1, t2), ms_between(t2, t3)};
    r.backend = backend_->name();
    r.providers = backend_->providers();
    return r;
}

}  // namespace ovss
