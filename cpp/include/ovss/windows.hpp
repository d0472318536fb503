// Sliding-window plan and stitching (runtime/windows.py).
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "ovss/tensor.hpp"

namespace ovss {

/// Windows aligned to the feature grid over an image padded bottom/right.
struct WindowPlan {
    int padded_h = 0, padded_w = 0;           ///< multiples of feature_stride, >= window
    int window = 0;                           ///< square window side S (the model input)
    int feature_stride = 0;                   ///< pixels per feature cell p
    std::vector<std::pair<int, int>> boxes;   ///< (y, x) top-left corners, multiples of p

    int feature_h() const { return padded_h / feature_stride; }
    int feature_w() const { return padded_w / feature_stride; }
};

/// Plan windows of side ``window`` over an HxW image; ``stride`` is rounded down to the grid.
/// Throws ConfigError when ``window`` is not a multiple of ``feature_stride``.
WindowPlan plan_windows(int h, int w, int window, int stride, int feature_stride);

/// Two thirds of the window, on the feature grid (448 -> 288 for p = 16).
int default_stride(int window, int feature_stride);

/// The [1,3,S,S] window at (y, x) of a [1,3,Hp,Wp] tensor, copied contiguous.
Tensor crop_window(const Tensor& padded, int y, int x, int size);

/// Window [1,3,S,S] -> scores [C,S/p,S/p].
using WindowRunner = std::function<Tensor(const Tensor&)>;

/// Run every window of ``padded`` [1,3,Hp,Wp] in plan order and average overlaps on a float32
/// [C,Hp/p,Wp/p] canvas (sum, then divide by the per-cell count).
Tensor stitch(const WindowPlan& plan, const Tensor& padded, const WindowRunner& run);

/// The same with the caller cutting the windows: ``run_at(y, x)`` gives the scores of the window
/// whose top-left corner is (y, x) (uint8 inputs crop their own padded image).
using WindowAt = std::function<Tensor(int y, int x)>;
Tensor stitch(const WindowPlan& plan, const WindowAt& run_at);

}  // namespace ovss
