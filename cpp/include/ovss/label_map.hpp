// Label maps from feature-resolution scores (runtime/label_map.py): bilinear upsampling + argmax,
// the open-set threshold (label 255, "unknown") and the confidence map, by an exact reference
// path and a fast path that gives the same labels.
//
// Reference (LabelMethod::Exact), in float64, in exactly this order (BilinearTaps per axis; the
// second product only where the two taps differ):
//     cols[c,i,x] = s[c,i,i0x] * w0x + s[c,i,i1x] * w1x
//     v[c,y,x]    = cols[c,i0y,x] * w0y + cols[c,i1y,x] * w1y
//     label = first argmax over c of v (a NaN beats numbers, as numpy's argmax)
// The library is built with -ffp-contract=off, so no FMA changes these roundings.
//
// Fast path (LabelMethod::Fast, the default; label_fast.cpp): per cell (r, q) = the output pixels
// whose taps lie in feature rows r..r+1 and columns q..q+1 (row y: r = min(i0y, h-2); column x
// likewise). v is a convex combination of the cell's 4 corner values, so only classes whose
// largest corner reaches L = max_c(smallest corner of c) - tol can win there (tol = 1e-9 * (1 +
// max |corner|), far above float64 rounding). One such candidate: the cell is filled with it.
// Several: the cell is split into blocks (a quadtree down to 16 pixels), each bounded the same
// way by the reference values at its 4 corner pixels (inside a cell a pixel's value is a convex
// combination of those too), and filled where one candidate is left; the remaining pixels
// evaluate only the candidates, with the reference expressions above, in class order (ties go
// to the lowest index). Every value is bit-identical to the reference's, so the labels are too.
// h == 1, w == 1 or any non-finite logit: the exact path. Logits already at the output size
// (identity taps, e.g. flush slide plans) are taken as they are: a plain first-max argmax, the
// reference's values being the logits themselves (Python's ``_direct``).
//
// p_top, the top class's score: ScoreKind::Softmax: 1 / sum_c exp(k (v_c - v_top)) (k = the
// manifest's score_scale, e.g. 100 for raw cosines; sequential sum in class order);
// ScoreKind::Probability: v_top (clipped to [0, 1] in the score map only). The fast path decides
// whole cells and blocks from bounds on p_top (tighter than sum_c exp(k (cmax_c - L)): the top
// class's own term is exactly 1), then per pixel from the exact terms of the classes within 8 / k
// of L plus bounds on the rest, and computes p_top itself only where those straddle a threshold,
// or everywhere for the score map. That sum covers the cell's classes with a largest corner >= L - 40 / k: each class left
// out adds < e^-40 to a sum >= 1, so p_top's relative error is < C * 4.3e-18 and a threshold
// decision can differ from the reference only where |p_top - T| < 1e-12.
#pragma once

#include <cstdint>
#include <string>

#include <opencv2/core.hpp>

#include "ovss/tensor.hpp"

namespace ovss {

/// Label of pixels whose p_top is below the score threshold.
inline constexpr int32_t kUnknown = 255;

/// How logits become p_top (the manifest's "score").
enum class ScoreKind { Softmax, Probability };
/// Which label computation runs.
enum class LabelMethod { Fast, Exact };

/// "softmax" / "probability"; throws ConfigError otherwise.
ScoreKind parse_score_kind(const std::string& name);
const char* score_kind_name(ScoreKind kind);
/// "fast" / "exact"; throws ConfigError otherwise.
LabelMethod parse_label_method(const std::string& name);
const char* label_method_name(LabelMethod method);

struct LabelOptions {
    ScoreKind score_kind = ScoreKind::Softmax;
    double score_scale = 1.0;  ///< softmax scale k > 0: p = softmax(k v) (Softmax kind only)
    /// In [0, 1): pixels with p_top below it get kUnknown (255); 0 = off. Needs C <= 255.
    double score_threshold = 0.0;
    /// In [0, 1): pixels with p_top below it get class 0 (SCLIP / ClearCLIP / NACLIP prob_thd),
    /// applied before the score threshold; 0 = off.
    double background_thd = 0.0;
    bool with_scores = false;  ///< also return p_top per pixel
    LabelMethod method = LabelMethod::Fast;
};

struct LabelMap {
    cv::Mat labels;            ///< CV_32S HxW: class in [0, C), or kUnknown below the threshold
    cv::Mat scores;            ///< CV_32F HxW p_top when asked for, else empty
    bool fast = false;         ///< the fast path ran (false: exact, asked for or needed)
    int64_t cells = 0;         ///< fast path: cells holding output pixels
    int64_t cells_filled = 0;  ///< of those, filled whole without per-pixel evaluation
};

/// Labels (and optionally p_top) of bilinearly upsampled logits.
///
/// Args: logits: float32 [C,h,w]; out_h, out_w > 0: output size; span_h, span_w: the size the
///   logits span (the padded size in slide mode, else out_h, out_w); options: see LabelOptions.
/// Throws ConfigError: bad shape or thresholds, or a score threshold with more than 255 classes.
LabelMap label_map(const Tensor& logits, int out_h, int out_w, double span_h, double span_w,
                   const LabelOptions& options = {});

}  // namespace ovss
