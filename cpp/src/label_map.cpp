// Label maps: the API, its checks and the exact reference path (see ovss/label_map.hpp,
// runtime/label_map.py); the fast path is label_fast.cpp.
#include "ovss/label_map.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "label_job.hpp"
#include "ovss/errors.hpp"
#include "ovss/postprocess.hpp"

namespace ovss {
namespace {

using detail::apply_fills;
using detail::Job;

/// cols[c][i][X]: the logits resampled along the width, float64 [C,h,W].
std::vector<double> resample_columns(const Tensor& logits, const BilinearTaps& tw) {
    const int64_t c_n = logits.shape[0], h = logits.shape[1], w = logits.shape[2];
    const int out_w = static_cast<int>(tw.i0.size());
    std::vector<double> cols(static_cast<size_t>(c_n * h) * out_w);
    for (int64_t row = 0; row < c_n * h; ++row) {
        const float* src = &logits.data[row * w];
        double* dst = &cols[row * out_w];
        for (int x = 0; x < out_w; ++x) {
            double acc = static_cast<double>(src[tw.i0[x]]) * tw.w0[x];
            if (tw.i1[x] != tw.i0[x]) acc += static_cast<double>(src[tw.i1[x]]) * tw.w1[x];
            dst[x] = acc;
        }
    }
    return cols;
}

/// Labels (and p_top) row by row from ``fill(c, y, v)``, which writes class c's values of output
/// row y into v[0, out_w): first maximum wins, and a NaN beats numbers (numpy's argmax).
template <class Fill>
LabelMap argmax_rows(const Job& job, int out_h, int out_w, Fill fill) {
    const int64_t c_n = job.logits.shape[0];
    LabelMap m;
    m.labels.create(out_h, out_w, CV_32S);
    if (job.with_scores) m.scores.create(out_h, out_w, CV_32F);
    const bool need_p = job.with_scores || !job.fills.empty();
    std::vector<double> best(out_w), v(static_cast<size_t>(need_p ? c_n : 1) * out_w);
    for (int y = 0; y < out_h; ++y) {
        int32_t* out = m.labels.ptr<int32_t>(y);
        for (int64_t c = 0; c < c_n; ++c) {
            double* row = &v[(need_p ? c : 0) * out_w];
            fill(c, y, row);
            for (int x = 0; x < out_w; ++x) {
                const double val = row[x];
                if (c == 0 || val > best[x] || (std::isnan(val) && !std::isnan(best[x]))) {
                    best[x] = val;
                    out[x] = static_cast<int32_t>(c);
                }
            }
        }
        if (!need_p) continue;
        for (int x = 0; x < out_w; ++x) {
            const double p = job.rule.top_probability(&v[x], static_cast<int>(c_n), out_w, best[x]);
            out[x] = apply_fills(out[x], p, job.fills);
            if (job.with_scores) m.scores.ptr<float>(y)[x] = job.rule.score(p);
        }
    }
    return m;
}

/// The reference: every class at every pixel.
LabelMap exact(const Job& job) {
    const int64_t h = job.logits.shape[1];
    const int out_h = static_cast<int>(job.th.i0.size()), out_w = static_cast<int>(job.tw.i0.size());
    const std::vector<double> cols = resample_columns(job.logits, job.tw);
    return argmax_rows(job, out_h, out_w, [&](int64_t c, int y, double* row) {
        const int i0 = job.th.i0[y], i1 = job.th.i1[y];
        const double w0 = job.th.w0[y], w1 = job.th.w1[y];
        const double* top = &cols[(c * h + i0) * out_w];
        const double* bot = &cols[(c * h + i1) * out_w];
        for (int x = 0; x < out_w; ++x) {
            double val = top[x] * w0;
            if (i1 != i0) val += bot[x] * w1;
            row[x] = val;
        }
    });
}

/// Whether ``t`` samples every one of ``in_len`` cells once at weight 1 (output = input).
bool is_identity(const BilinearTaps& t, int64_t in_len) {
    if (static_cast<int64_t>(t.i0.size()) != in_len) return false;
    for (int i = 0; i < static_cast<int>(in_len); ++i)
        if (t.i0[i] != i || t.w1[i] != 0.0) return false;
    return true;
}

/// ``exact`` for identity taps (logits already at the output size, e.g. flush slide plans): the
/// reference's values are the logits themselves (x * 1.0 == x), so no upsampling (as Python's
/// ``_direct``).
LabelMap direct(const Job& job) {
    const int64_t h = job.logits.shape[1], w = job.logits.shape[2];
    LabelMap m = argmax_rows(job, static_cast<int>(h), static_cast<int>(w), [&](int64_t c, int y, double* row) {
        const float* src = &job.logits.data[(c * h + y) * w];
        for (int64_t x = 0; x < w; ++x) row[x] = src[x];
    });
    m.fast = true;
    return m;
}

bool all_finite(const std::vector<float>& v) {
    for (float x : v)
        if (!std::isfinite(x)) return false;
    return true;
}

}  // namespace

ScoreKind parse_score_kind(const std::string& name) {
    if (name == "softmax") return ScoreKind::Softmax;
    if (name == "probability") return ScoreKind::Probability;
    throw ConfigError("score kind must be softmax or probability, got '" + name + "'");
}

const char* score_kind_name(ScoreKind kind) {
    return kind == ScoreKind::Softmax ? "softmax" : "probability";
}

LabelMethod parse_label_method(const std::string& name) {
    if (name == "fast") return LabelMethod::Fast;
    if (name == "exact") return LabelMethod::Exact;
    throw ConfigError("postprocess must be fast or exact, got '" + name + "'");
}

const char* label_method_name(LabelMethod method) {
    return method == LabelMethod::Fast ? "fast" : "exact";
}

LabelMap label_map(const Tensor& logits, int out_h, int out_w, double span_h, double span_w,
                   const LabelOptions& o) {
    if (logits.shape.size() != 3 || logits.numel() == 0)
        throw ConfigError("logits must be a non-empty [C,h,w] tensor, got " + logits.shape_str());
    if (out_h < 1 || out_w < 1)
        throw ConfigError("output size must be positive, got " + std::to_string(out_h) + "x" + std::to_string(out_w));
    for (const auto& [name, t] : {std::pair{"score_threshold", o.score_threshold}, {"background_thd", o.background_thd}}) {
        if (!(t >= 0.0 && t < 1.0))
            throw ConfigError(std::string(name) + " must be in [0, 1), got " + std::to_string(t));
    }
    if (!(std::isfinite(o.score_scale) && o.score_scale > 0))
        throw ConfigError("score scale must be a positive number, got " + std::to_string(o.score_scale));
    const int64_t c_n = logits.shape[0], h = logits.shape[1], w = logits.shape[2];
    if (o.score_threshold > 0 && c_n > kUnknown)
        throw ConfigError("a score threshold labels unknown pixels 255: at most 255 classes, got " +
                          std::to_string(c_n));
    Job job{logits, bilinear_taps(out_h, static_cast<int>(h), span_h),
            bilinear_taps(out_w, static_cast<int>(w), span_w), {}, {o.score_kind, o.score_scale}, o.with_scores};
    if (o.background_thd > 0) job.fills.push_back({o.background_thd, 0});
    if (o.score_threshold > 0) job.fills.push_back({o.score_threshold, kUnknown});
    if (o.method == LabelMethod::Fast && h > 1 && w > 1 && all_finite(logits.data)) {
        if (is_identity(job.th, h) && is_identity(job.tw, w)) return direct(job);  // already at the output size
        return detail::fast_label_map(job);
    }
    return exact(job);
}

}  // namespace ovss
