// Sliding-window plans and stitching (runtime/windows.py).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ovss/tensor.hpp"

namespace ovss {

/// Window placement and averaging (runtime/windows.py ``EDGES``):
/// Flush (the official mmseg ``slide_inference``): windows at i * stride on the image itself, the
///   last one flush with the edge, any stride; each window's scores upsampled to the window and
///   overlaps averaged at full resolution. An image smaller than the window in a dimension is
///   padded up to it there.
/// Grid (faster): windows on the feature grid (stride rounded down to a multiple of it), the image
///   padded to a multiple of it, overlaps averaged on one feature-resolution canvas.
enum class SlideEdge { Flush, Grid };

/// "flush" / "grid"; throws ConfigError otherwise.
SlideEdge parse_slide_edge(const std::string& name);
const char* slide_edge_name(SlideEdge edge);

/// Square windows over an image padded bottom/right.
struct WindowPlan {
    int padded_h = 0, padded_w = 0;          ///< >= window (Grid: multiples of feature_stride)
    int window = 0;                          ///< square window side S (the model input)
    int feature_stride = 0;                  ///< pixels per feature cell p
    std::vector<std::pair<int, int>> boxes;  ///< (y, x) top-left corners (Grid: multiples of p)
    SlideEdge edge = SlideEdge::Grid;

    int feature_h() const { return padded_h / feature_stride; }
    int feature_w() const { return padded_w / feature_stride; }
    /// Size of the stitched scores: pixels (Flush) or feature cells (Grid).
    int canvas_h() const { return edge == SlideEdge::Flush ? padded_h : feature_h(); }
    int canvas_w() const { return edge == SlideEdge::Flush ? padded_w : feature_w(); }
};

/// mmseg's window starts along one axis: (max(size - crop + stride - 1, 0)) / stride + 1 windows
/// at max(min(i * stride + crop, size) - crop, 0) (all at 0 when size <= crop).
std::vector<int> window_starts(int size, int crop, int stride);

/// The most windows a slide plan may hold: a tiny stride on a large image would otherwise run
/// the model for hours (a hostile or mistyped --stride). plan_windows refuses more.
inline constexpr int64_t kMaxWindows = 10000;

/// Plan windows of side ``window`` over an HxW image; ``stride`` in pixels >= 1 (clamped to the
/// window; Grid: rounded down to the feature grid). Throws ConfigError when ``window`` is not a
/// multiple of ``feature_stride`` or ``stride`` < 1.
WindowPlan plan_windows(int h, int w, int window, int stride, int feature_stride, SlideEdge edge = SlideEdge::Grid);

/// Two thirds of the window, on the feature grid (448 -> 288 for p = 16).
int default_stride(int window, int feature_stride);

/// float32 [C,h,w] -> float32 [C,out_h,out_w], bilinear (align_corners=False), exactly as Python's
/// ``runtime.label_map.upsample``: float64 taps with their weights rounded to float32, columns
/// first (s[c,i,j0] * w0 + s[c,i,j1] * w1, both products always), then rows, float32 arithmetic.
Tensor upsample_bilinear(const Tensor& scores, int out_h, int out_w);

/// A window's scores [C,h,w] -> [C,S,S] for Flush plans (empty: upsample_bilinear).
using WindowUpsample = std::function<Tensor(const Tensor& scores, int size)>;

/// For graphs with mask logits (Flush plans): mask logits [C,h,w] -> upsample_bilinear to [C,S,S],
/// then p = 1 / (1 + exp(-u)) - bias[c] in float32, as Python's slide path. ``bias``: one value per
/// class (the manifest's ``method_cfg.seen_bias``), or empty for zeros.
WindowUpsample sigmoid_upsample(std::vector<float> bias);

/// The [1,3,S,S] window at (y, x) of a [1,3,Hp,Wp] tensor, copied contiguous.
Tensor crop_window(const Tensor& padded, int y, int x, int size);

/// Window [1,3,S,S] -> scores [C,S/p,S/p].
using WindowRunner = std::function<Tensor(const Tensor&)>;

/// Run every window of ``padded`` [1,3,Hp,Wp] in plan order and average the overlaps, in float32
/// (sum, then divide by the per-position count): Grid: on a [C,Hp/p,Wp/p] canvas; Flush: each
/// window's scores upsampled by ``up`` first, on a [C,Hp,Wp] canvas.
Tensor stitch(const WindowPlan& plan, const Tensor& padded, const WindowRunner& run, const WindowUpsample& up = {});

/// The same with the caller cutting the windows: ``run_at(y, x)`` gives the scores of the window
/// whose top-left corner is (y, x) (uint8 inputs crop their own padded image).
using WindowAt = std::function<Tensor(int y, int x)>;
Tensor stitch(const WindowPlan& plan, const WindowAt& run_at, const WindowUpsample& up = {});

}  // namespace ovss
