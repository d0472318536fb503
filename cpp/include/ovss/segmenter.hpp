// Segment images with a deployable folder (runtime/segmenter.py).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "ovss/backend.hpp"
#include "ovss/manifest.hpp"
#include "ovss/tensor.hpp"

namespace ovss {

/// Wall-clock milliseconds per stage of one call.
struct Timings {
    double preprocess_ms = 0, inference_ms = 0, postprocess_ms = 0;
    double total_ms() const { return preprocess_ms + inference_ms + postprocess_ms; }
};

/// One segmented image.
struct SegResult {
    cv::Mat labels;                            ///< CV_32S HxW class indices, input image size
    Tensor logits;                             ///< float32 [C,h,w] at feature resolution
    std::vector<std::string> classes;          ///< index-aligned with the label values
    std::vector<std::string> classes_present;  ///< classes occurring in ``labels``, class order
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
    int short_side = -1;  ///< rescale to this short side first (-1: the manifest's; 0: none)
    bool verify = true;                   ///< check model_sha256
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
    /// float, rows L2-normalised here exactly as numpy does (float32 pairwise sums).
    void set_vocabulary(const std::vector<std::string>& classes, const std::vector<float>& embeddings);

    const Manifest& manifest() const { return manifest_; }
    Backend& backend() { return *backend_; }
    const std::vector<std::string>& classes() const { return classes_; }

private:
    std::filesystem::path model_path() const;
    void check_graph_io() const;
    void load_default_vocabulary();
    Tensor run_model(const Tensor& image);

    std::filesystem::path folder_;
    SegmenterOptions options_;
    int short_side_ = 0;  ///< resolved: options, else the manifest's method short side
    Manifest manifest_;
    std::unique_ptr<Backend> backend_;
    std::vector<std::string> classes_;
    Tensor text_;  ///< [C,D] normalised embeddings (vocab_mode "input" only)
};

}  // namespace ovss
