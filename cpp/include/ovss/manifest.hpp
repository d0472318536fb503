// The deployable folder's manifest.json: a typed, validated view (see runtime/manifest.py).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ovss {

inline constexpr int kFormatVersion = 1;
inline constexpr const char* kManifestFile = "manifest.json";
/// Limits on what a manifest may hold (hostile folders): its size in bytes, the nesting depth of
/// its JSON, the model input side in pixels and the text encoder's context length.
inline constexpr std::uintmax_t kMaxManifestBytes = 16u << 20;
inline constexpr int kMaxJsonDepth = 32;
inline constexpr int kMaxInputSide = 16384;
inline constexpr int kMaxContextLength = 1024;

/// How an RGB uint8 image becomes the model input.
struct PreprocessCfg {
    int input_h = 0, input_w = 0;    ///< fixed model input size, pixels
    std::array<double, 3> mean{};    ///< per-channel RGB mean, 0..255 scale
    std::array<double, 3> std{};     ///< per-channel RGB std, 0..255 scale, > 0
    int feature_stride = 0;          ///< input pixels per logit cell
    /// The image input: "float32-nchw" (host resizes and normalises: float32 [1,3,H,W]), or
    /// "uint8-nhwc" / "uint8-nchw" (host only resizes: uint8 [1,H,W,3] / [1,3,H,W] RGB 0..255,
    /// the graph normalises). Absent in older manifests: float32-nchw.
    std::string input_format = "float32-nchw";
};

/// In-graph post-processing: the graph also outputs "labels" [1,H,W] (``labels_dtype``) and
/// "scores" float32 [1,H,W] at ``output_h`` x ``output_w``, beside its logits.
struct PostprocessCfg {
    int output_h = 0, output_w = 0;
    std::string labels_dtype;  ///< "uint8" or "int32"
};

/// One graph input or output. Named (dynamic) axes are -1 in ``shape``.
struct TensorSpec {
    std::string name, dtype, meaning;
    std::vector<int64_t> shape;
};

/// Where the weights came from; ``random`` means random-init (masks meaningless).
struct WeightsInfo {
    std::string source, sha256;
    bool random = false;
};

struct Manifest {
    std::string method, backbone;
    WeightsInfo weights;
    std::vector<std::string> classes;
    std::string vocab_mode;  ///< "fixed" or "input"
    PreprocessCfg preprocess;
    std::vector<TensorSpec> inputs, outputs;
    int opset = 0;
    std::string package_version;
    std::string model_file = "model.onnx";
    std::string model_sha256;
    std::optional<std::string> text_embeddings_file;
    std::string text_embeddings_sha256;  ///< required (non-empty) with text_embeddings_file
    /// Every file the manifest names, as (field, file name) pairs: model_file, variants.*.file,
    /// text_embeddings_file, text_encoder.file / vocab_file. load_manifest checks that each
    /// resolves inside the folder.
    std::vector<std::pair<std::string, std::string>> named_files;
    /// ``variants``: precision -> graph file name (fp16, int8; the C++ programs run fp32 only).
    std::vector<std::pair<std::string, std::string>> variant_files;
    int format_version = kFormatVersion;
    /// From ``method_cfg`` (0 when absent): the method's slide step in pixels, and its background
    /// probability threshold (pixels whose top softmax probability is below it become class 0).
    int slide_stride = 0;
    int short_side = 0;  ///< the method's test resize: short side in pixels (0: none)
    double prob_thd = 0.0;
    /// ``method_cfg.slide_edge``: "flush" or "grid" ("" when absent: the runtime's default, flush).
    std::string slide_edge;
    /// ``method_cfg.seen_bias`` (fixed-vocabulary ZegCLIP / CLIP-RC folders): one value per class,
    /// subtracted from sigmoid(mask_logits) in the flush slide path; empty when absent (zeros).
    std::vector<float> seen_bias;
    /// The folder's own vocabulary's seen-class bias: the top-level ``seen_bias`` value at the
    /// ``seen_classes``, 0 elsewhere ([C]); empty when there are none. vocab_mode "input" folders
    /// subtract it by default, as Python's default vocabulary (``seen=manifest.seen_classes``).
    std::vector<float> seen_class_bias;
    /// How logits become p_top: "softmax" or "probability" (ZegCLIP / CLIP-RC). Absent in older
    /// manifests: "probability" for those two methods, else "softmax".
    std::string score = "softmax";
    /// Softmax scale k: p = softmax(k * logits). Absent: 100 for MaskCLIP without key smoothing
    /// (raw cosines), else 1.
    double score_scale = 1.0;
    std::optional<PostprocessCfg> postprocess;  ///< absent: the host upsamples the logits

    /// The input called ``name``; throws ModelFolderError if absent.
    const TensorSpec& input(const std::string& name) const;
    /// The output called ``name``; throws ModelFolderError if absent.
    const TensorSpec& output(const std::string& name) const;
};

/// Parse and validate manifest JSON text; ``where`` names the file in error messages.
/// Refused (ModelFolderError naming the field): JSON nested deeper than kMaxJsonDepth, missing
/// fields or fields of the wrong type (floats where integers belong are never truncated),
/// non-finite or non-positive mean/std, an input size over kMaxInputSide, a feature_stride that
/// is not > 0 or does not divide the input size, file names that are absolute or hold ``..``,
/// empty or malformed sha256 fields (text_embeddings_sha256 is required with
/// text_embeddings_file), a text encoder context length outside [2, kMaxContextLength].
Manifest manifest_from_json_text(const std::string& text, const std::string& where);

/// Read and validate ``folder/manifest.json``.
/// Throws ModelFolderError: folder or manifest missing, larger than kMaxManifestBytes, not JSON,
/// missing or bad fields, or a named file (manifest.json included) resolving outside the folder.
Manifest load_manifest(const std::filesystem::path& folder);

}  // namespace ovss
