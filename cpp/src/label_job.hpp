// Internal to label_map.cpp / label_fast.cpp: one label-map computation's inputs and rules.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ovss/label_map.hpp"
#include "ovss/postprocess.hpp"

namespace ovss::detail {

/// A threshold and the label it gives below it; applied in order (the last failed one wins).
struct Fill {
    double threshold;
    int32_t label;
};

inline int32_t apply_fills(int32_t label, double p, const std::vector<Fill>& fills) {
    for (const Fill& f : fills)
        if (p < f.threshold) label = f.label;
    return label;
}

/// How values become p_top: the score kind and the softmax scale k.
struct Rule {
    ScoreKind kind;
    double k;
    /// One softmax term, exp(k (v - top)), as numpy's ``np.exp(k * (v - vmax))``.
    double term(double v, double top) const { return std::exp(k * (v - top)); }
    /// p_top from the values of a pixel's classes (stride apart, class order) and the top value.
    double top_probability(const double* v, int n, size_t stride, double top) const {
        if (kind == ScoreKind::Probability) return top;
        double denom = 0.0;
        for (int i = 0; i < n; ++i) denom += term(v[i * stride], top);
        return 1.0 / denom;
    }
    /// The score map's value: p_top, clipped to [0, 1] for probabilities (softmax is in it).
    float score(double p) const {
        return static_cast<float>(kind == ScoreKind::Probability ? std::min(1.0, std::max(0.0, p)) : p);
    }
};

struct Job {
    const Tensor& logits;
    BilinearTaps th, tw;
    std::vector<Fill> fills;
    Rule rule;
    bool with_scores;
};

/// The fast path (label_fast.cpp): finite logits, h and w >= 2.
LabelMap fast_label_map(const Job& job);

}  // namespace ovss::detail
