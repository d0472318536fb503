// Label maps: exact reference and fast per-cell path (see ovss/label_map.hpp, runtime/label_map.py).
#include "ovss/label_map.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ovss/errors.hpp"
#include "ovss/postprocess.hpp"

namespace ovss {
namespace {

constexpr double kCandTol = 1e-9;     // candidate margin, relative to 1 + the cell's max |corner|
constexpr double kRelevant = 40.0;    // classes this far below L are left out of softmax sums
constexpr double kDecideTol = 1e-9;   // relative margin of whole-cell threshold decisions
constexpr double kNear = 8.0;         // per-pixel bounds: classes this close to L are evaluated

/// A threshold and the label it gives below it; applied in order (the last failed one wins).
struct Fill {
    double threshold;
    int32_t label;
};

int32_t apply_fills(int32_t label, double p, const std::vector<Fill>& fills) {
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

/// The reference: every class at every pixel.
LabelMap exact(const Job& job) {
    const int64_t c_n = job.logits.shape[0], h = job.logits.shape[1];
    const int out_h = static_cast<int>(job.th.i0.size()), out_w = static_cast<int>(job.tw.i0.size());
    const std::vector<double> cols = resample_columns(job.logits, job.tw);
    LabelMap m;
    m.labels.create(out_h, out_w, CV_32S);
    if (job.with_scores) m.scores.create(out_h, out_w, CV_32F);
    const bool need_p = job.with_scores || !job.fills.empty();
    std::vector<double> best(out_w), v(need_p ? static_cast<size_t>(c_n) * out_w : 0);
    for (int y = 0; y < out_h; ++y) {
        int32_t* out = m.labels.ptr<int32_t>(y);
        const int i0 = job.th.i0[y], i1 = job.th.i1[y];
        const double w0 = job.th.w0[y], w1 = job.th.w1[y];
        for (int64_t c = 0; c < c_n; ++c) {
            const double* top = &cols[(c * h + i0) * out_w];
            const double* bot = &cols[(c * h + i1) * out_w];
            for (int x = 0; x < out_w; ++x) {
                double val = top[x] * w0;
                if (i1 != i0) val += bot[x] * w1;
                if (need_p) v[c * out_w + x] = val;
                // First maximum wins, and a NaN beats numbers (numpy's argmax).
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

/// One axis split into cells: cell k holds the output samples count[k] from start[k] on.
struct CellAxis {
    std::vector<int> start, count;
};

CellAxis cell_axis(const BilinearTaps& t, int in_len) {
    CellAxis a{std::vector<int>(in_len - 1, 0), std::vector<int>(in_len - 1, 0)};
    for (int i = 0; i < static_cast<int>(t.i0.size()); ++i) {
        const int cell = std::min(t.i0[i], in_len - 2);  // i0 never decreases: cells are contiguous
        if (a.count[cell]++ == 0) a.start[cell] = i;
    }
    return a;
}

/// What the per-pixel pass of a cell computes.
enum class Work {
    Argmax,  ///< labels only, over the candidates
    Bounds,  ///< softmax thresholds: per-pixel bounds on p_top; exact p_top only where they straddle
             ///< (over the near classes: a superset of the candidates, so the argmax is the same)
    Scores,  ///< p_top at every pixel (scores, or the probability kind)
};

/// The fast path: per cell, candidates from corner bounds; per pixel only where needed.
class FastPath {
public:
    explicit FastPath(const Job& job)
        : job_(job), c_n_(static_cast<int>(job.logits.shape[0])), h_(static_cast<int>(job.logits.shape[1])),
          w_(static_cast<int>(job.logits.shape[2])), plane_(static_cast<size_t>(h_) * w_),
          ay_(cell_axis(job.th, h_)), ax_(cell_axis(job.tw, w_)), cmax_(c_n_), cmin_(c_n_) {}

    LabelMap run() {
        m_.fast = true;
        m_.labels.create(static_cast<int>(job_.th.i0.size()), static_cast<int>(job_.tw.i0.size()), CV_32S);
        if (job_.with_scores) m_.scores.create(m_.labels.size(), CV_32F);
        for (int r = 0; r + 1 < h_; ++r)
            for (int q = 0; q + 1 < w_; ++q)
                if (ay_.count[r] && ax_.count[q]) cell(r, q);
        return m_;
    }

private:
    void cell(int r, int q);
    void decide(int32_t& failed, bool& undecided) const;
    void fill(int r, int q, int32_t label);
    void per_pixel(int r, int q, const std::vector<int>& classes, Work work);
    int32_t bounded_label(int32_t label, const double* v, int k_n, size_t stride, double top, int y, int x) const;
    double value(int c, int y, int x) const;

    const Job& job_;
    int c_n_, h_, w_;
    size_t plane_;
    CellAxis ay_, ax_;
    LabelMap m_;
    std::vector<double> cmax_, cmin_;   // per class, over the cell's 4 corners
    double low_ = 0, high_ = 0, tol_ = 0;  // L, U and the margin of the current cell
    double rest_hi_ = 0, rest_lo_ = 0;  // sums over classes not near of exp(cmax - L), exp(cmin - L)
    std::vector<int> cand_, near_, relevant_;  // class lists, ascending (cand in near in relevant)
    std::vector<double> top_, bot_, v_;  // per-pixel scratch [K][nx]
};

/// Cell (r, q): corner bounds per class, candidates, threshold decisions, then a fill or the
/// per-pixel pass.
void FastPath::cell(int r, int q) {
    ++m_.cells;
    const float* p = job_.logits.data.data() + static_cast<size_t>(r) * w_ + q;
    double low = -std::numeric_limits<double>::infinity(), high = low, mag = 0.0;
    for (int c = 0; c < c_n_; ++c, p += plane_) {
        const double a = p[0], b = p[1], d = p[w_], e = p[w_ + 1];
        const double mx = std::max(std::max(a, b), std::max(d, e)), mn = std::min(std::min(a, b), std::min(d, e));
        cmax_[c] = mx, cmin_[c] = mn;
        low = std::max(low, mn), high = std::max(high, mx);
        mag = std::max(mag, std::max(std::fabs(mx), std::fabs(mn)));
    }
    low_ = low, high_ = high, tol_ = kCandTol * (1.0 + mag);
    cand_.clear();
    for (int c = 0; c < c_n_; ++c)
        if (cmax_[c] >= low - tol_) cand_.push_back(c);
    int32_t failed = -1;
    bool undecided = false;
    decide(failed, undecided);
    if (!undecided && !job_.with_scores) {
        if (failed < 0 && cand_.size() > 1) return per_pixel(r, q, cand_, Work::Argmax);
        fill(r, q, failed >= 0 ? failed : cand_[0]);
        ++m_.cells_filled;
        return;
    }
    if (job_.rule.kind == ScoreKind::Probability) return per_pixel(r, q, cand_, Work::Scores);  // p = v_top
    relevant_.clear();  // a superset of the candidates (tol << 40 / k for any sane logits)
    const double k = job_.rule.k, cut = low - std::max(kRelevant / k, tol_);
    for (int c = 0; c < c_n_; ++c)
        if (cmax_[c] >= cut) relevant_.push_back(c);
    if (job_.with_scores) return per_pixel(r, q, relevant_, Work::Scores);
    // Thresholds per pixel: the classes near L exactly, bounds on the rest (each term < e^-8).
    near_.clear();
    rest_hi_ = rest_lo_ = 0.0;
    const double near_cut = low - std::max(kNear / k, tol_);
    for (int c = 0; c < c_n_; ++c) {
        if (cmax_[c] >= near_cut) near_.push_back(c);
        else rest_hi_ += job_.rule.term(cmax_[c], low), rest_lo_ += job_.rule.term(cmin_[c], low);  // each < 1
    }
    per_pixel(r, q, near_, Work::Bounds);
}

/// Whole-cell threshold decisions from bounds on p_top (v_top in [L, U], v_c in [cmin, cmax],
/// each widened by 2 tol): ``failed`` = the last fill every pixel gets, ``undecided`` = some
/// threshold needs p_top per pixel.
void FastPath::decide(int32_t& failed, bool& undecided) const {
    if (job_.fills.empty()) return;
    double p_lo = 0.0, p_hi = 0.0;
    if (job_.rule.kind == ScoreKind::Softmax) {
        // D = sum_c exp(k (v_c - v_top)) = 1 + the other classes' terms, and top is a candidate:
        // D <= 1 + sum over c != k_lo of exp(k (cmax_c - L)), k_lo the candidate of least cmax;
        // D >= 1 + sum over c != k_hi of exp(k (cmin_c - U)), k_hi the candidate of largest cmin.
        int k_lo = cand_[0], k_hi = cand_[0];
        for (int c : cand_) {
            if (cmax_[c] < cmax_[k_lo]) k_lo = c;
            if (cmin_[c] > cmin_[k_hi]) k_hi = c;
        }
        double d_hi = 1.0, d_lo = 1.0;
        for (int c = 0; c < c_n_; ++c) {
            if (c != k_lo) d_hi += job_.rule.term(cmax_[c] + 2.0 * tol_, low_);
            if (c != k_hi) d_lo += job_.rule.term(cmin_[c] - 2.0 * tol_, high_);
        }
        p_lo = 1.0 / d_hi, p_hi = 1.0 / d_lo;
    } else {
        p_lo = low_ - tol_, p_hi = high_ + tol_;
    }
    for (const Fill& f : job_.fills) {
        if (p_lo >= f.threshold * (1.0 + kDecideTol)) continue;
        if (p_hi < f.threshold * (1.0 - kDecideTol)) failed = f.label;
        else undecided = true;
    }
}

void FastPath::fill(int r, int q, int32_t label) {
    const int xs = ax_.start[q], nx = ax_.count[q];
    for (int y = ay_.start[r]; y < ay_.start[r] + ay_.count[r]; ++y) {
        int32_t* out = m_.labels.ptr<int32_t>(y) + xs;
        std::fill(out, out + nx, label);
    }
}

/// Class c at pixel (y, x) with the reference expressions (bit-identical to per_pixel's).
double FastPath::value(int c, int y, int x) const {
    const BilinearTaps &th = job_.th, &tw = job_.tw;
    const float* base = job_.logits.data.data() + c * plane_;
    const auto col = [&](int i) {
        const float* row = base + static_cast<size_t>(i) * w_;
        double a = static_cast<double>(row[tw.i0[x]]) * tw.w0[x];
        if (tw.i1[x] != tw.i0[x]) a += static_cast<double>(row[tw.i1[x]]) * tw.w1[x];
        return a;
    };
    double v = col(th.i0[y]) * th.w0[y];
    if (th.i1[y] != th.i0[y]) v += col(th.i1[y]) * th.w1[y];
    return v;
}

/// Work::Bounds at one pixel: the near classes' exact terms plus bounds on the others' (v_c in
/// [cmin_c, cmax_c] +- tol, factored as exp(c* - L) * exp(L - v_top)); the thresholds these
/// bounds decide are applied, else p_top is computed over the relevant classes.
int32_t FastPath::bounded_label(int32_t label, const double* v, int k_n, size_t stride, double top, int y,
                                int x) const {
    double d_cand = 0.0;
    const Rule& rule = job_.rule;
    for (int k = 0; k < k_n; ++k) d_cand += rule.term(v[k * stride], top);
    const double p_lo = 1.0 / (d_cand + rule.term(low_ + tol_, top) * rest_hi_);
    const double p_hi = 1.0 / (d_cand + rule.term(low_ - tol_, top) * rest_lo_);
    int32_t out = label;
    for (const Fill& f : job_.fills) {
        if (p_lo >= f.threshold * (1.0 + kDecideTol)) continue;
        if (p_hi >= f.threshold * (1.0 - kDecideTol)) {  // straddles: p_top itself decides
            double denom = 0.0;
            for (int c : relevant_) denom += rule.term(value(c, y, x), top);
            return apply_fills(label, 1.0 / denom, job_.fills);
        }
        out = f.label;
    }
    return out;
}

/// Evaluate ``classes`` (ascending) at every pixel of cell (r, q) with the reference expressions:
/// cols of feature rows r and r+1 over the cell's columns, then each output row's two taps.
void FastPath::per_pixel(int r, int q, const std::vector<int>& classes, Work work) {
    const int k_n = static_cast<int>(classes.size()), xs = ax_.start[q], nx = ax_.count[q];
    const size_t nxs = static_cast<size_t>(nx);
    const BilinearTaps &th = job_.th, &tw = job_.tw;
    top_.resize(k_n * nxs), bot_.resize(k_n * nxs), v_.resize(k_n * nxs);
    for (int k = 0; k < k_n; ++k) {
        const float* row0 = job_.logits.data.data() + classes[k] * plane_ + static_cast<size_t>(r) * w_;
        const float* row1 = row0 + w_;
        for (int j = 0; j < nx; ++j) {
            const int x = xs + j, i0 = tw.i0[x], i1 = tw.i1[x];
            double a = static_cast<double>(row0[i0]) * tw.w0[x], b = static_cast<double>(row1[i0]) * tw.w0[x];
            if (i1 != i0) a += static_cast<double>(row0[i1]) * tw.w1[x], b += static_cast<double>(row1[i1]) * tw.w1[x];
            top_[k * nxs + j] = a, bot_[k * nxs + j] = b;
        }
    }
    for (int y = ay_.start[r]; y < ay_.start[r] + ay_.count[r]; ++y) {
        const int i0 = th.i0[y], i1 = th.i1[y];
        const double w0 = th.w0[y], w1 = th.w1[y];
        const double* c0 = i0 == r ? top_.data() : bot_.data();  // i0 is r, or r + 1 at the clamped edge
        const double* c1 = i1 == r ? top_.data() : bot_.data();
        for (size_t i = 0; i < k_n * nxs; ++i) {
            double val = c0[i] * w0;
            if (i1 != i0) val += c1[i] * w1;
            v_[i] = val;
        }
        int32_t* out = m_.labels.ptr<int32_t>(y) + xs;
        for (int j = 0; j < nx; ++j) {
            int best = 0;
            for (int k = 1; k < k_n; ++k)
                if (v_[k * nxs + j] > v_[best * nxs + j]) best = k;
            out[j] = classes[best];
            const double top = v_[best * nxs + j];
            if (work == Work::Bounds) {
                out[j] = bounded_label(out[j], &v_[j], k_n, nxs, top, y, xs + j);
            } else if (work == Work::Scores) {
                const double p = job_.rule.top_probability(&v_[j], k_n, nxs, top);
                out[j] = apply_fills(out[j], p, job_.fills);
                if (job_.with_scores) m_.scores.ptr<float>(y)[xs + j] = job_.rule.score(p);
            }
        }
    }
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
    if (o.method == LabelMethod::Fast && h > 1 && w > 1 && all_finite(logits.data)) return FastPath(job).run();
    return exact(job);
}

}  // namespace ovss
