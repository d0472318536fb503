// Segmenter: validation, whole/slide, backend, upsample + argmax (runtime/segmenter.py).
#include "ovss/segmenter.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "ovss/errors.hpp"
#include "ovss/folder_paths.hpp"
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

/// The graph's uint8 image input from an SxS RGB window, laid out as ``format`` says:
/// "uint8-nhwc" [1,S,S,3] (the pixels as they are) or "uint8-nchw" [1,3,S,S].
TypedTensor uint8_input(const cv::Mat& rgb, const std::string& format) {
    TypedTensor t{DType::UInt8, {}, std::vector<uint8_t>(rgb.total() * 3)};
    const int h = rgb.rows, w = rgb.cols;
    const size_t plane = rgb.total();
    if (format == "uint8-nhwc") t.shape = {1, h, w, 3};
    else t.shape = {1, 3, h, w};
    for (int y = 0; y < h; ++y) {
        const uint8_t* row = rgb.ptr<uint8_t>(y);
        if (format == "uint8-nhwc") {
            std::memcpy(&t.bytes[static_cast<size_t>(y) * w * 3], row, static_cast<size_t>(w) * 3);
            continue;
        }
        for (int x = 0; x < w; ++x)
            for (int c = 0; c < 3; ++c) t.bytes[c * plane + static_cast<size_t>(y) * w + x] = row[x * 3 + c];
    }
    return t;
}

/// In-graph labels [1,H,W] (uint8, int32 or int64) as a CV_32S HxW map.
cv::Mat graph_label_mat(const TypedTensor& labels, int h, int w) {
    cv::Mat out(h, w, CV_32S);
    int32_t* dst = out.ptr<int32_t>();
    const size_t n = static_cast<size_t>(h) * w;
    const uint8_t* src = labels.bytes.data();
    switch (labels.dtype) {
        case DType::UInt8: std::copy(src, src + n, dst); break;
        case DType::Int32: std::memcpy(dst, src, n * 4); break;
        case DType::Int64:
            for (size_t i = 0; i < n; ++i) {
                int64_t v;
                std::memcpy(&v, src + i * 8, 8);
                dst[i] = static_cast<int32_t>(v);
            }
            break;
        default: throw ModelFolderError("graph labels must be uint8, int32 or int64");
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
    if (pre.input_h != pre.input_w)
        throw ModelFolderError("only square inputs are supported, manifest has " + std::to_string(pre.input_h) +
                               "x" + std::to_string(pre.input_w));
    // The method's own slide step (recorded by the exporter) is the default, as in Python.
    if (options_.stride <= 0)
        options_.stride = manifest_.slide_stride > 0 ? manifest_.slide_stride
                                                     : default_stride(pre.input_h, pre.feature_stride);
    const std::string& edge = options_.slide_edge.empty() ? manifest_.slide_edge : options_.slide_edge;
    slide_edge_ = parse_slide_edge(edge.empty() ? "flush" : edge);
    for (const TensorSpec& t : manifest_.outputs) mask_logits_ = mask_logits_ || t.name == io_names::kMaskLogits;
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
    const fs::path real = resolve_in_folder(folder_, manifest_.model_file, "model_file");
    if (!fs::is_regular_file(real))
        throw ModelFolderError("model file '" + path.string() + "' named by the manifest is missing");
    // the sha256 is never empty (load_manifest refuses that): verify reads the real file
    if (options_.verify && sha256_file(real) != manifest_.model_sha256)
        throw ModelFolderError("'" + path.string() + "' does not match the manifest's sha256: corrupt or modified");
    return real;
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
    if (name.empty()) throw ModelFolderError("vocab_mode 'input' needs the text embeddings file ''");
    const fs::path path = resolve_in_folder(folder_, name, "text_embeddings_file");
    if (!fs::is_regular_file(path))
        throw ModelFolderError("vocab_mode 'input' needs the text embeddings file '" + name + "'");
    if (options_.verify && sha256_file(path) != manifest_.text_embeddings_sha256)
        throw ModelFolderError("'" + (folder_ / name).string() +
                               "' does not match the manifest's text_embeddings_sha256: corrupt or modified");
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
    text_bias_ = manifest_.seen_class_bias;  // Python: seen=manifest.seen_classes
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
    text_bias_.clear();
    classes_ = classes;
}

Feeds Segmenter::feeds(const TensorRef& image) const {
    Feeds f{{io_names::kImage, image}};
    if (!text_.shape.empty()) f.emplace_back(io_names::kTextEmbeddings, TensorRef(text_));
    return f;
}

Tensor Segmenter::run_model(const TensorRef& image, const char* output) {
    Tensor out = backend_->run(feeds(image), output);
    if (out.shape.size() != 4 || out.shape[0] != 1)
        throw ModelFolderError(std::string("model ") + output + " must be [1,C,h,w], got " + out.shape_str());
    if (out.shape[1] != static_cast<int64_t>(classes_.size()))
        throw ModelFolderError("model returns " + std::to_string(out.shape[1]) + " class scores but the vocabulary has " +
                               std::to_string(classes_.size()) + " classes");
    out.shape.erase(out.shape.begin());
    // The vocabulary's seen bias on LOGITS (float32, as Python's logits - bias[:, None, None]).
    if (!text_bias_.empty() && std::string(output) == io_names::kLogits) {
        const int64_t plane = out.shape[1] * out.shape[2];
        for (int64_t c = 0; c < out.shape[0]; ++c)
            for (int64_t i = 0; i < plane; ++i) out.data[c * plane + i] -= text_bias_[c];
    }
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
    r.classes = classes_;
    if (r.mode == "whole" && use_graph_labels(r.mode, out_h, out_w)) {
        run_graph_labels(rgb, r, t0);
        summarise_labels(r);
        r.backend = backend_->name();
        r.providers = backend_->providers();
        return r;
    }
    if (r.mode == "whole") {
        const cv::Mat x = resize_rgb(rgb, pre.input_h, pre.input_w);
        t1 = Clock::now();
        r.logits = run_image(x, io_names::kLogits);
        r.windows = 1;
    } else {
        const WindowPlan plan =
            plan_windows(rgb.rows, rgb.cols, pre.input_h, options_.stride, pre.feature_stride, slide_edge_);
        t1 = Clock::now();
        r.logits = run_slide(rgb, plan);
        r.windows = static_cast<int>(plan.boxes.size());
        span_h = plan.padded_h * (static_cast<double>(out_h) / rgb.rows);
        span_w = plan.padded_w * (static_cast<double>(out_w) / rgb.cols);
    }
    const auto t2 = Clock::now();
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

Tensor Segmenter::run_image(const cv::Mat& rgb, const char* output) {
    const PreprocessCfg& pre = manifest_.preprocess;
    if (pre.input_format == "float32-nchw") return run_model(normalize(rgb, pre), output);
    return run_model(uint8_input(rgb, pre.input_format), output);
}

Tensor Segmenter::run_slide(const cv::Mat& rgb, const WindowPlan& plan) {
    const PreprocessCfg& pre = manifest_.preprocess;
    const int s = plan.window;
    // Flush plans of graphs with mask logits: upsample those, then sigmoid - bias (the official
    // order, as Python); the bias is the fixed graph's own, or the vocabulary's (none: zeros).
    const bool masks = plan.edge == SlideEdge::Flush && mask_logits_;
    const char* output = masks ? io_names::kMaskLogits : io_names::kLogits;
    WindowUpsample up;
    if (masks) up = sigmoid_upsample(text_.shape.empty() ? manifest_.seen_bias : text_bias_);
    if (pre.input_format == "float32-nchw") {
        Tensor x = Tensor::zeros({1, 3, plan.padded_h, plan.padded_w});  // zero = the mean colour
        normalize_into(rgb, pre, x);
        return stitch(plan, x, [this, output](const Tensor& w) { return run_model(w, output); }, up);
    }
    // Graphs that normalise themselves: pad with the mean colour rounded to uint8 (half to even,
    // as numpy's rint), then cut each window out of that image.
    cv::Scalar mean;
    for (int c = 0; c < 3; ++c) mean[c] = std::nearbyint(pre.mean[c]);
    cv::Mat canvas(plan.padded_h, plan.padded_w, CV_8UC3, mean);
    rgb.copyTo(canvas(cv::Rect(0, 0, rgb.cols, rgb.rows)));
    return stitch(plan, [&](int y, int x) { return run_image(canvas(cv::Rect(x, y, s, s)).clone(), output); }, up);
}

bool Segmenter::use_graph_labels(const std::string& mode, int out_h, int out_w) const {
    const auto& post = manifest_.postprocess;
    // the graph's own labels know no seen bias of the vocabulary (as Python)
    return options_.graph_labels && post && text_bias_.empty() && mode == "whole" && post->output_h == out_h &&
           post->output_w == out_w;
}

/// Whole mode on a folder with in-graph post-processing at the image's size: the graph's labels
/// and scores, with the thresholds applied on the host as Python does (scores < T in float32;
/// probability scores clipped to [0, 1] first).
void Segmenter::run_graph_labels(const cv::Mat& rgb, SegResult& r, Clock::time_point t0) {
    const PreprocessCfg& pre = manifest_.preprocess;
    const cv::Mat x = resize_rgb(rgb, pre.input_h, pre.input_w);
    Tensor xf;
    TypedTensor x8;
    const bool floats = pre.input_format == "float32-nchw";
    if (floats) xf = normalize(x, pre);
    else x8 = uint8_input(x, pre.input_format);
    const auto t1 = Clock::now();
    const auto outs = backend_->run_outputs(feeds(floats ? TensorRef(xf) : TensorRef(x8)),
                                            {io_names::kLabels, io_names::kScores});
    const auto t2 = Clock::now();
    const TypedTensor &labels = outs.at(0), &scores = outs.at(1);
    const int h = manifest_.postprocess->output_h, w = manifest_.postprocess->output_w;
    const std::vector<int64_t> want{1, h, w};
    if (labels.shape != want || scores.shape != want || scores.dtype != DType::Float32)
        throw ModelFolderError("graph labels/scores must be [1," + std::to_string(h) + "," + std::to_string(w) +
                               "] (scores float32), got " + Tensor{labels.shape, {}}.shape_str() + " " +
                               dtype_name(labels.dtype) + " / " + Tensor{scores.shape, {}}.shape_str() + " " +
                               dtype_name(scores.dtype));
    r.labels = graph_label_mat(labels, h, w);
    r.scores.create(h, w, CV_32F);
    std::memcpy(r.scores.data, scores.bytes.data(), scores.bytes.size());
    if (score_kind_ == ScoreKind::Probability) r.scores = cv::min(cv::max(r.scores, 0.0), 1.0);
    std::vector<std::pair<float, int32_t>> fills;
    if (manifest_.prob_thd > 0) fills.emplace_back(static_cast<float>(manifest_.prob_thd), 0);
    if (options_.score_threshold > 0) fills.emplace_back(static_cast<float>(options_.score_threshold), kUnknown);
    for (int y = 0; y < h; ++y) {
        const float* p = r.scores.ptr<float>(y);
        int32_t* out = r.labels.ptr<int32_t>(y);
        for (int i = 0; i < w; ++i)
            for (const auto& [t, fill] : fills)
                if (p[i] < t) out[i] = fill;
    }
    if (!options_.with_scores) r.scores.release();
    r.windows = 1;
    r.postprocess = "graph";
    r.timings = {ms_between(t0, t1), ms_between(t1, t2), ms_between(t2, Clock::now())};
}

}  // namespace ovss
