// The fast label path (see ovss/label_map.hpp): per cell, the classes that can win from corner
// bounds; undecided cells are split into blocks (quadtree) whose bounds come from the reference
// values at their corner pixels; per pixel only in small blocks, with the reference expressions.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "label_job.hpp"

namespace ovss::detail {
namespace {

constexpr double kCandTol = 1e-9;    // candidate margin, relative to 1 + the cell's max |corner|
constexpr double kRelevant = 40.0;   // classes this far below L (/ k) are left out of softmax sums
constexpr double kDecideTol = 1e-9;  // relative margin of threshold decisions from bounds
constexpr double kNear = 8.0;        // thresholds per pixel: classes this close to L (/ k) exactly
constexpr int kLeaf = 16;            // blocks of at most this many pixels are evaluated per pixel

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

/// Output pixels [y0, y1) x [x0, x1) of one cell. Along each axis the bilinear weight of the
/// cell's far row / column never decreases, so every pixel's value is a convex combination of the
/// values at the block's 4 corner pixels (up to rounding, far below the margins).
struct Block {
    int y0, y1, x0, x1;
    int area() const { return (y1 - y0) * (x1 - x0); }
};

/// What the per-pixel pass computes.
enum class Work {
    Argmax,  ///< labels only, over the candidates
    Bounds,  ///< softmax thresholds: the near classes' exact terms plus bounds on the others';
             ///< exact p_top only where those straddle a threshold
    Scores,  ///< p_top at every pixel (score maps, or probability thresholds: p = v_top)
};

class FastPath {
public:
    explicit FastPath(const Job& job)
        : job_(job), c_n_(static_cast<int>(job.logits.shape[0])), h_(static_cast<int>(job.logits.shape[1])),
          w_(static_cast<int>(job.logits.shape[2])), plane_(static_cast<size_t>(h_) * w_),
          ay_(cell_axis(job.th, h_)), ax_(cell_axis(job.tw, w_)), cmax_(c_n_), cmin_(c_n_), bmax_(c_n_),
          bmin_(c_n_), all_(c_n_) {
        for (int c = 0; c < c_n_; ++c) all_[c] = c;
    }

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
    void decide(const std::vector<int>& list, const std::vector<int>& cand, const std::vector<double>& mx,
                const std::vector<double>& mn, double low, double high, bool rest, int32_t& failed,
                bool& undecided) const;
    void refine(int r, const Block& b, const std::vector<int>& list, bool thresholds);
    void fill(const Block& b, int32_t label);
    void per_pixel(int r, const Block& b, const std::vector<int>& classes, Work work);
    int32_t bounded_label(int32_t label, const double* v, int k_n, size_t stride, double top, int y, int x) const;
    double value(int c, int y, int x) const;

    const Job& job_;
    int c_n_, h_, w_;
    size_t plane_;
    CellAxis ay_, ax_;
    LabelMap m_;
    std::vector<double> cmax_, cmin_;      // per class, over the cell's 4 corners
    std::vector<double> bmax_, bmin_;      // per class, over a block's 4 corner pixels
    double low_ = 0, tol_ = 0;             // the cell's L and margin
    double rest_hi_ = 0, rest_lo_ = 0;     // over classes not near: sum exp(k (cmax - L)), exp(k (cmin - L))
    std::vector<int> all_, cand_, near_, relevant_;  // class lists, ascending (cand in near in relevant)
    std::vector<double> top_, bot_, v_;    // per-pixel scratch [K][nx]
};

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
    low_ = low, tol_ = kCandTol * (1.0 + mag);
    cand_.clear();
    for (int c = 0; c < c_n_; ++c)
        if (cmax_[c] >= low - tol_) cand_.push_back(c);
    int32_t failed = -1;
    bool undecided = false;
    const Block b{ay_.start[r], ay_.start[r] + ay_.count[r], ax_.start[q], ax_.start[q] + ax_.count[q]};
    if (!job_.fills.empty()) decide(all_, cand_, cmax_, cmin_, low, high, false, failed, undecided);
    if (!undecided && !job_.with_scores) {
        if (failed < 0 && cand_.size() > 1) return refine(r, b, cand_, false);
        fill(b, failed >= 0 ? failed : cand_[0]);
        ++m_.cells_filled;
        return;
    }
    const Rule& rule = job_.rule;
    if (rule.kind == ScoreKind::Probability)  // p = v_top: the candidates decide everything
        return job_.with_scores ? per_pixel(r, b, cand_, Work::Scores) : refine(r, b, cand_, true);
    relevant_.clear();  // supersets of the candidates (tol << 8 / k for any sane logits)
    near_.clear();
    rest_hi_ = rest_lo_ = 0.0;
    const double cut = low - std::max(kRelevant / rule.k, tol_), near_cut = low - std::max(kNear / rule.k, tol_);
    for (int c = 0; c < c_n_; ++c) {
        if (cmax_[c] >= cut) relevant_.push_back(c);
        if (cmax_[c] >= near_cut) near_.push_back(c);
        else rest_hi_ += rule.term(cmax_[c], low), rest_lo_ += rule.term(cmin_[c], low);  // each < 1
    }
    if (job_.with_scores) return per_pixel(r, b, relevant_, Work::Scores);
    refine(r, b, near_, true);
}

/// Threshold decisions over a region from bounds on p_top: v_c in [mn_c, mx_c] (+- tol) for the
/// classes in ``list``, the top class one of ``cand`` with v_top in [low, high]; with ``rest``,
/// the classes outside ``list`` (not near) are bounded by the cell's corners via rest_hi_ /
/// rest_lo_. D = sum_c exp(k (v_c - v_top)) = 1 + the other classes' terms, so
/// D <= 1 + sum over c != k_lo of the upper terms (k_lo: the candidate of least mx), and
/// D >= 1 + sum over c != k_hi of the lower terms (k_hi: the candidate of largest mn).
/// ``failed``: the last fill every pixel gets; ``undecided``: some threshold needs more work.
void FastPath::decide(const std::vector<int>& list, const std::vector<int>& cand, const std::vector<double>& mx,
                      const std::vector<double>& mn, double low, double high, bool rest, int32_t& failed,
                      bool& undecided) const {
    const Rule& rule = job_.rule;
    double p_lo = low - tol_, p_hi = high + tol_;  // probability: p_top = v_top
    if (rule.kind == ScoreKind::Softmax) {
        int k_lo = cand[0], k_hi = cand[0];
        for (int c : cand) {
            if (mx[c] < mx[k_lo]) k_lo = c;
            if (mn[c] > mn[k_hi]) k_hi = c;
        }
        double d_hi = 1.0, d_lo = 1.0;
        for (int c : list) {
            if (c != k_lo) d_hi += rule.term(mx[c] + 2.0 * tol_, low);
            if (c != k_hi) d_lo += rule.term(mn[c] - 2.0 * tol_, high);
        }
        if (rest) {
            d_hi += rule.term(low_ + 2.0 * tol_, low) * rest_hi_;
            d_lo += rule.term(low_ - 2.0 * tol_, high) * rest_lo_;
        }
        p_lo = 1.0 / d_hi, p_hi = 1.0 / d_lo;
    }
    for (const Fill& f : job_.fills) {
        if (p_lo >= f.threshold * (1.0 + kDecideTol)) continue;
        if (p_hi < f.threshold * (1.0 - kDecideTol)) failed = f.label;
        else undecided = true;
    }
}

/// Block ``b`` of cell row r, where only ``list`` can win (and, with ``thresholds``, some
/// threshold is undecided): bounds from the corner pixels, then a fill, four sub-blocks, or
/// (small blocks) the per-pixel pass.
void FastPath::refine(int r, const Block& b, const std::vector<int>& list, bool thresholds) {
    const bool softmax = job_.rule.kind == ScoreKind::Softmax;
    if (b.area() <= kLeaf) {
        const Work work = !thresholds ? Work::Argmax : (softmax ? Work::Bounds : Work::Scores);
        return per_pixel(r, b, list, work);
    }
    const int ys[2] = {b.y0, b.y1 - 1}, xs[2] = {b.x0, b.x1 - 1};
    double low = -std::numeric_limits<double>::infinity();
    for (int c : list) {
        double mx = -std::numeric_limits<double>::infinity(), mn = -mx;
        for (int y : ys)
            for (int x : xs) {
                const double v = value(c, y, x);
                mx = std::max(mx, v), mn = std::min(mn, v);
            }
        bmax_[c] = mx, bmin_[c] = mn;
        low = std::max(low, mn);
    }
    std::vector<int> cand;
    double high = -std::numeric_limits<double>::infinity();
    for (int c : list)
        if (bmax_[c] >= low - tol_) cand.push_back(c), high = std::max(high, bmax_[c]);
    if (thresholds) {
        int32_t failed = -1;
        bool undecided = false;
        decide(list, cand, bmax_, bmin_, low, high, softmax, failed, undecided);
        if (!undecided && failed >= 0) return fill(b, failed);
        thresholds = undecided;  // every threshold passes: labels only from here
    }
    if (!thresholds && cand.size() == 1) return fill(b, cand[0]);
    // Softmax thresholds need the near classes per pixel; argmax (and p = v_top) the candidates.
    const std::vector<int>& next = thresholds && softmax ? list : cand;
    const int ym = (b.y0 + b.y1) / 2, xm = (b.x0 + b.x1) / 2;
    for (const Block& s : {Block{b.y0, ym, b.x0, xm}, Block{b.y0, ym, xm, b.x1}, Block{ym, b.y1, b.x0, xm},
                           Block{ym, b.y1, xm, b.x1}})
        if (s.area() > 0) refine(r, s, next, thresholds);
}

void FastPath::fill(const Block& b, int32_t label) {
    for (int y = b.y0; y < b.y1; ++y) {
        int32_t* out = m_.labels.ptr<int32_t>(y);
        std::fill(out + b.x0, out + b.x1, label);
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
/// [cmin_c, cmax_c] +- tol, factored as exp(k (c* - L)) * exp(k (L - v_top))); the thresholds
/// these bounds decide are applied, else p_top is computed over the relevant classes.
int32_t FastPath::bounded_label(int32_t label, const double* v, int k_n, size_t stride, double top, int y,
                                int x) const {
    const Rule& rule = job_.rule;
    double d_near = 0.0;
    for (int k = 0; k < k_n; ++k) d_near += rule.term(v[k * stride], top);
    const double p_lo = 1.0 / (d_near + rule.term(low_ + tol_, top) * rest_hi_);
    const double p_hi = 1.0 / (d_near + rule.term(low_ - tol_, top) * rest_lo_);
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

/// Evaluate ``classes`` (ascending) at every pixel of block b (cell row r) with the reference
/// expressions: cols of feature rows r and r+1 over the block's columns, then each row's taps.
void FastPath::per_pixel(int r, const Block& b, const std::vector<int>& classes, Work work) {
    const int k_n = static_cast<int>(classes.size()), nx = b.x1 - b.x0;
    const size_t nxs = static_cast<size_t>(nx);
    const BilinearTaps &th = job_.th, &tw = job_.tw;
    top_.resize(k_n * nxs), bot_.resize(k_n * nxs), v_.resize(k_n * nxs);
    for (int k = 0; k < k_n; ++k) {
        const float* row0 = job_.logits.data.data() + classes[k] * plane_ + static_cast<size_t>(r) * w_;
        const float* row1 = row0 + w_;
        for (int j = 0; j < nx; ++j) {
            const int x = b.x0 + j, i0 = tw.i0[x], i1 = tw.i1[x];
            double a = static_cast<double>(row0[i0]) * tw.w0[x], c = static_cast<double>(row1[i0]) * tw.w0[x];
            if (i1 != i0) a += static_cast<double>(row0[i1]) * tw.w1[x], c += static_cast<double>(row1[i1]) * tw.w1[x];
            top_[k * nxs + j] = a, bot_[k * nxs + j] = c;
        }
    }
    for (int y = b.y0; y < b.y1; ++y) {
        const int i0 = th.i0[y], i1 = th.i1[y];
        const double w0 = th.w0[y], w1 = th.w1[y];
        const double* c0 = i0 == r ? top_.data() : bot_.data();  // i0 is r, or r + 1 at the clamped edge
        const double* c1 = i1 == r ? top_.data() : bot_.data();
        for (size_t i = 0; i < k_n * nxs; ++i) {
            double val = c0[i] * w0;
            if (i1 != i0) val += c1[i] * w1;
            v_[i] = val;
        }
        int32_t* out = m_.labels.ptr<int32_t>(y) + b.x0;
        for (int j = 0; j < nx; ++j) {
            int best = 0;
            for (int k = 1; k < k_n; ++k)
                if (v_[k * nxs + j] > v_[best * nxs + j]) best = k;
            out[j] = classes[best];
            const double top = v_[best * nxs + j];
            if (work == Work::Bounds) {
                out[j] = bounded_label(out[j], &v_[j], k_n, nxs, top, y, b.x0 + j);
            } else if (work == Work::Scores) {
                const double p = job_.rule.top_probability(&v_[j], k_n, nxs, top);
                out[j] = apply_fills(out[j], p, job_.fills);
                if (job_.with_scores) m_.scores.ptr<float>(y)[b.x0 + j] = job_.rule.score(p);
            }
        }
    }
}

}  // namespace

LabelMap fast_label_map(const Job& job) { return FastPath(job).run(); }

}  // namespace ovss::detail
