// Segment images with a deployable folder (runtime/segmenter.py).
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "ovss/backend.hpp"
#include "ovss/label_map.hpp"
#include "ovss/manifest.hpp"
#include "ovss/tensor.hpp"
#include "ovss/windows.hpp"

namespace ovss {

/// Wall-clock milliseconds per stage of one call.
struct Timings {
    double preprocess_ms = 0, inference_ms = 0, postprocess_ms = 0;
    double total_ms() const { return preprocess_ms + inference_ms + postprocess_ms; }
};

/// One segmented image.
struct SegResult {
    cv::Mat labels;                            ///< CV_32S HxW class indices (255: unknown), input size
    cv::Mat scores;                            ///< CV_32F HxW top-class score p_top (with_scores), else empty
    /// float32 [C,h,w] at feature resolution (whole mode, grid slide plans), or [C,Hp,Wp] at the
    /// (rescaled) image's padded size (flush slide plans); empty: graph labels
    Tensor logits;
    std::vector<std::string> classes;          ///< index-aligned with the label values
    std::vector<std::string> classes_present;  ///< classes occurring in ``labels``, class order
    int64_t unknown_pixels = 0;                ///< pixels labelled unknown (255, score threshold)
    std::string postprocess;                   ///< the label path that ran: "fast", "exact" or "graph"
    std::string mode;                          ///< "whole" or "slide"
    int windows = 0;                           ///< number of model runs
    Timings timings;
    std::string backend;
    std::vector<std::string> providers;
};

struct SegmenterOptions {
    std::string backend = "onnxruntime";  ///< "onnxruntime", "tensorrt" or "auto"
    std::string mode = "auto";            ///< "auto" (whole if it fits, else slide), "whole", "slide"
    int stride = 0;      ///< slide step in pixels (0: the manifest's, else two thirds of the input)
    /// Slide window placement, "flush" or "grid" (windows.hpp); "": the manifest's, else "flush".
    std::string slide_edge;
    int short_side = -1;  ///< rescale to this short side first (-1: the manifest's; 0: none)
    bool verify = true;                   ///< check model_sha256
    /// In [0, 1): pixels whose top-class score (the manifest's "score" kind) is below it are
    /// labelled 255, "unknown"; 0 = off. Needs at most 255 classes.
    double score_threshold = 0.0;
    bool with_scores = false;             ///< also return the per-pixel top-class score map
    /// Fast (default) or Exact: identical labels (see label_map.hpp); Exact is the reference.
    LabelMethod label_method = LabelMethod::Fast;
    /// Folders exported with in-graph post-processing: take the graph's labels and scores in
    /// whole mode when the image has the graph's output size (else the host computes them).
    bool graph_labels = true;
    BackendOptions backend_options;
};

class Segmenter {
public:
    /// Load ``folder`` (manifest.json + model.onnx). Throws ModelFolderError, ConfigError,
    /// VocabularyError or BackendUnavailable with a one-line reason.
    explicit Segmenter(const std::filesystem::path& folder, SegmenterOptions options = {});

    /// Segment HxW[x1|3|4] uint8 RGB (see as_rgb_uint8). Throws InvalidImageError.
    SegResult operator()(const cv::Mat& image);

    /// Swap the vocabulary of a vocab_mode "input" model: ``embeddings`` row-major [C,D]
    /// float, rows L2-normalised here exactly as numpy does (float32 pairwise sums). No seen-class
    /// bias (Python's ``seen=None``); the folder's own vocabulary has the manifest's.
    void set_vocabulary(const std::vector<std::string>& classes, const std::vector<float>& embeddings);

    const Manifest& manifest() const { return manifest_; }
    Backend& backend() { return *backend_; }
    const std::vector<std::string>& classes() const { return classes_; }
    const SegmenterOptions& options() const { return options_; }

private:
    std::filesystem::path model_path() const;
    void check_graph_io() const;
    void load_default_vocabulary();
    Feeds feeds(const TensorRef& image) const;
    Tensor run_model(const TensorRef& image, const char* output);
    Tensor run_image(const cv::Mat& rgb, const char* output);
    Tensor run_slide(const cv::Mat& rgb, const WindowPlan& plan);
    bool use_graph_labels(const std::string& mode, int out_h, int out_w) const;
    void run_graph_labels(const cv::Mat& rgb, SegResult& r, std::chrono::steady_clock::time_point t0);
    void check_class_count(size_t classes) const;

    std::filesystem::path folder_;
    SegmenterOptions options_;
    int short_side_ = 0;  ///< resolved: options, else the manifest's method short side
    SlideEdge slide_edge_ = SlideEdge::Flush;  ///< resolved: options, else the manifest's, else flush
    bool mask_logits_ = false;  ///< the graph has mask_logits (flush slides: sigmoid after upsampling)
    ScoreKind score_kind_ = ScoreKind::Softmax;  ///< the manifest's
    Manifest manifest_;
    std::unique_ptr<Backend> backend_;
    std::vector<std::string> classes_;
    Tensor text_;  ///< [C,D] normalised embeddings (vocab_mode "input" only)
    /// [C] seen-class bias of text_ (the folder's own vocabulary: the manifest's seen classes;
    /// set_vocabulary: none), subtracted from logits as a fixed graph has it built in; empty: none.
    std::vector<float> text_bias_;
};

}  // namespace ovss
