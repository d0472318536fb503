// label_map: the fast path gives the exact path's labels (and thresholds and scores) on logits
// built to break it: near-ties 1e-7 apart, duplicated classes, flat and smooth fields, padded
// spans, down- and upscaling, 1xN grids, non-finite values.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <random>

#include "ovss/errors.hpp"
#include "ovss/label_map.hpp"
#include "ovss/postprocess.hpp"

using namespace ovss;

namespace {

enum class Field { Uniform, Levels, NearTies, Smooth, Sharp, Unit };

/// [C,h,w] logits of a kind; classes 2k+1 copy class 2k where ``duplicate``.
Tensor make_logits(Field kind, int c_n, int h, int w, std::mt19937& rng, bool duplicate = false) {
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    Tensor t = Tensor::zeros({c_n, h, w});
    std::vector<double> fx(c_n), fy(c_n), ph(c_n);
    for (int c = 0; c < c_n; ++c) {
        fx[c] = 0.2 + 0.5 * (u(rng) + 1), fy[c] = 0.2 + 0.5 * (u(rng) + 1);
        ph[c] = 3 * u(rng);
    }
    std::vector<double> base(static_cast<size_t>(h) * w);
    for (double& b : base) b = u(rng);
    for (int c = 0; c < c_n; ++c)
        for (int i = 0; i < h; ++i)
            for (int j = 0; j < w; ++j) {
                double v = 0;
                switch (kind) {
                    case Field::Uniform: v = u(rng); break;
                    case Field::Levels: v = std::round(u(rng) * 2) / 2; break;  // 5 levels: exact ties
                    case Field::NearTies: v = base[i * w + j] + (c % 4) * 1e-7 * (u(rng) > 0 ? 1 : -1); break;
                    case Field::Smooth: v = std::sin(fx[c] * i + ph[c]) * std::cos(fy[c] * j - ph[c]); break;
                    case Field::Sharp:  // CLIP-like: large regions, a clear winner in most of them
                        v = 10 * std::sin(0.15 * fx[c] * i + ph[c]) * std::cos(0.15 * fy[c] * j - ph[c]);
                        v += 0.05 * u(rng);
                        break;
                    case Field::Unit: v = 0.5 + 0.5 * u(rng); break;  // probabilities
                }
                t.data[(static_cast<size_t>(c) * h + i) * w + j] = static_cast<float>(v);
            }
    if (duplicate)
        for (int c = 1; c < c_n; c += 2)
            std::copy_n(&t.data[static_cast<size_t>(c - 1) * h * w], h * w, &t.data[static_cast<size_t>(c) * h * w]);
    return t;
}

/// The reference p_top at (y, x), in float64 from the formulas of label_map.hpp (this file is
/// compiled with -ffp-contract=off too), for checking threshold decisions near T.
double reference_p(const Tensor& s, const BilinearTaps& th, const BilinearTaps& tw, int y, int x, ScoreKind kind,
                   double k = 1.0) {
    const int64_t c_n = s.shape[0], h = s.shape[1], w = s.shape[2];
    std::vector<double> v(c_n);
    double top = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < c_n; ++c) {
        const auto col = [&](int i) {
            const float* row = &s.data[(c * h + i) * w];
            double a = static_cast<double>(row[tw.i0[x]]) * tw.w0[x];
            if (tw.i1[x] != tw.i0[x]) a += static_cast<double>(row[tw.i1[x]]) * tw.w1[x];
            return a;
        };
        v[c] = col(th.i0[y]) * th.w0[y];
        if (th.i1[y] != th.i0[y]) v[c] += col(th.i1[y]) * th.w1[y];
        top = std::max(top, v[c]);
    }
    if (kind == ScoreKind::Probability) return top;
    double d = 0;
    for (double val : v) d += std::exp(k * (val - top));
    return 1.0 / d;
}

struct Grid {
    int out_h, out_w;
    double span_h, span_w;
};

/// Fast vs exact on one input: identical labels; threshold decisions equal except where
/// |p_top - T| < 1e-12; scores within 1e-6. Returns the fast run.
LabelMap expect_same(const Tensor& logits, const Grid& g, LabelOptions o) {
    o.method = LabelMethod::Exact;
    const LabelMap want = label_map(logits, g.out_h, g.out_w, g.span_h, g.span_w, o);
    o.method = LabelMethod::Fast;
    const LabelMap got = label_map(logits, g.out_h, g.out_w, g.span_h, g.span_w, o);
    EXPECT_FALSE(want.fast);
    const bool thresholds = o.score_threshold > 0 || o.background_thd > 0;
    const BilinearTaps th = bilinear_taps(g.out_h, static_cast<int>(logits.shape[1]), g.span_h);
    const BilinearTaps tw = bilinear_taps(g.out_w, static_cast<int>(logits.shape[2]), g.span_w);
    int differ = 0;
    for (int y = 0; y < g.out_h; ++y)
        for (int x = 0; x < g.out_w; ++x) {
            const int32_t a = want.labels.at<int32_t>(y, x), b = got.labels.at<int32_t>(y, x);
            if (a == b) continue;
            const double p = reference_p(logits, th, tw, y, x, o.score_kind, o.score_scale);
            const bool near = thresholds && (std::fabs(p - o.score_threshold) < 1e-12 ||
                                             std::fabs(p - o.background_thd) < 1e-12);
            if (!near && differ++ < 5)
                ADD_FAILURE() << "label differs at " << y << "," << x << ": exact " << a << " fast " << b << " p " << p;
        }
    if (o.with_scores) {
        EXPECT_EQ(got.scores.size(), want.scores.size());
        EXPECT_LE(cv::norm(got.scores, want.scores, cv::NORM_INF), 1e-6);
    } else {
        EXPECT_TRUE(got.scores.empty());
    }
    return got;
}

}  // namespace

TEST(LabelMap, FastEqualsExactOnAdversarialLogits) {
    std::mt19937 rng(20240614);
    const Field kinds[] = {Field::Uniform, Field::Levels, Field::NearTies, Field::Smooth, Field::Sharp};
    int64_t cells = 0, filled = 0, fast_runs = 0;
    for (int trial = 0; trial < 400; ++trial) {
        std::uniform_int_distribution<int> small(1, 9), out(1, 70), classes(1, 24);
        const Field kind = kinds[trial % 5];
        const int c_n = classes(rng), h = small(rng), w = small(rng);
        Grid g{out(rng), out(rng), 0, 0};
        const bool padded = trial % 3 == 0;  // slide mode: the logits span more than the output
        g.span_h = padded ? g.out_h * (1.0 + small(rng) / 7.0) : g.out_h;
        g.span_w = padded ? g.out_w * (1.0 + small(rng) / 7.0) : g.out_w;
        const Tensor logits = make_logits(kind, c_n, h, w, rng, trial % 4 == 1);
        SCOPED_TRACE("trial " + std::to_string(trial) + ": C=" + std::to_string(c_n) + " " + logits.shape_str() +
                     " -> " + std::to_string(g.out_h) + "x" + std::to_string(g.out_w));
        const LabelMap m = expect_same(logits, g, {});
        EXPECT_EQ(m.fast, h > 1 && w > 1);
        cells += m.cells, filled += m.cells_filled, fast_runs += m.fast;
    }
    EXPECT_GT(fast_runs, 200);
    EXPECT_GT(filled, 0);
    EXPECT_LT(filled, cells);  // both fills and per-pixel cells were exercised
}

TEST(LabelMap, ThresholdsAndScoresMatchTheReference) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<double> t01(0.0, 1.0);
    const Field kinds[] = {Field::Smooth, Field::Sharp, Field::NearTies, Field::Levels, Field::Unit};
    for (int trial = 0; trial < 300; ++trial) {
        std::uniform_int_distribution<int> small(2, 8), out(1, 50), classes(1, 12);
        const Field kind = kinds[trial % 5];
        const int c_n = classes(rng);
        const Tensor logits = make_logits(kind, c_n, small(rng), small(rng), rng, trial % 3 == 0);
        Grid g{out(rng), out(rng), 0, 0};
        g.span_h = g.out_h * (trial % 2 ? 1.0 : 1.3), g.span_w = g.out_w * (trial % 2 ? 1.0 : 1.2);
        LabelOptions o;
        o.score_kind = kind == Field::Unit || trial % 7 == 0 ? ScoreKind::Probability : ScoreKind::Softmax;
        o.score_scale = std::array<double, 3>{1.0, 100.0, 0.25}[trial % 3];  // CLIP's 100 on raw cosines
        // Softmax p_top lies in [1/C, 1]: thresholds spread over that range hit every decision.
        const double lo = o.score_kind == ScoreKind::Softmax ? 1.0 / c_n : 0.0;
        o.score_threshold = std::min(0.999, lo + (1 - lo) * t01(rng));
        o.background_thd = trial % 4 == 0 ? std::min(0.999, lo + (1 - lo) * t01(rng)) : 0.0;
        o.with_scores = trial % 2 == 0;
        SCOPED_TRACE("trial " + std::to_string(trial));
        expect_same(logits, g, o);
    }
}

TEST(LabelMap, LogitsAtTheOutputSizeAreTakenDirectly) {
    // Flush slide plans give logits at the (padded) image's size: identity taps, a plain first-max
    // argmax (no cells), with thresholds and scores as the reference.
    std::mt19937 rng(11);
    const Field kinds[] = {Field::Levels, Field::NearTies, Field::Sharp, Field::Unit};
    for (int trial = 0; trial < 40; ++trial) {
        const Field kind = kinds[trial % 4];
        const int c_n = 1 + trial % 9, h = 2 + trial % 7, w = 3 + trial % 5;
        const Tensor logits = make_logits(kind, c_n, h, w, rng, trial % 3 == 0);
        LabelOptions o;
        o.score_kind = kind == Field::Unit ? ScoreKind::Probability : ScoreKind::Softmax;
        o.score_threshold = trial % 2 ? 0.0 : 0.6;
        o.background_thd = trial % 4 == 1 ? 0.4 : 0.0;
        o.with_scores = trial % 3 != 1;
        SCOPED_TRACE("trial " + std::to_string(trial));
        const LabelMap m = expect_same(logits, Grid{h, w, double(h), double(w)}, o);
        EXPECT_TRUE(m.fast);
        EXPECT_EQ(m.cells, 0);  // the direct path, not the cell-based one
    }
}

TEST(LabelMap, LargeCellsAreRefinedInBlocks) {
    // 3x4 logits over 241x297 pixels: cells of ~80x75 pixels, split into blocks down to 16
    // pixels, with class boundaries, near-ties and threshold crossings inside them.
    std::mt19937 rng(17);
    const Field kinds[] = {Field::Smooth, Field::NearTies, Field::Levels, Field::Unit, Field::Uniform};
    for (int trial = 0; trial < 30; ++trial) {
        const Field kind = kinds[trial % 5];
        const int c_n = 2 + trial % 9;
        const Tensor logits = make_logits(kind, c_n, 3, 4, rng, trial % 4 == 3);
        LabelOptions o;
        o.score_kind = kind == Field::Unit ? ScoreKind::Probability : ScoreKind::Softmax;
        o.score_scale = trial % 3 == 1 ? 100.0 : 1.0;
        const double lo = o.score_kind == ScoreKind::Softmax ? 1.0 / c_n : 0.0;
        o.score_threshold = trial % 2 ? lo + (1 - lo) * (0.1 + 0.08 * (trial % 10)) : 0.0;
        o.background_thd = trial % 6 == 5 ? lo + (1 - lo) * 0.5 : 0.0;
        o.with_scores = trial % 7 == 0;
        SCOPED_TRACE("trial " + std::to_string(trial));
        expect_same(logits, {241, 297, 241 * 1.05, 297.0}, o);
    }
}

TEST(LabelMap, ThresholdExactlyAtAPixelsScore) {
    // T = a pixel's own float64 p_top: the reference keeps it (p < T is false); the fast path may
    // only disagree within 1e-12 of T (expect_same checks that), and nowhere else.
    std::mt19937 rng(11);
    const Tensor logits = make_logits(Field::Smooth, 6, 5, 6, rng);
    const Grid g{40, 37, 40, 37};
    const BilinearTaps th = bilinear_taps(g.out_h, 5, g.span_h), tw = bilinear_taps(g.out_w, 6, g.span_w);
    for (const ScoreKind kind : {ScoreKind::Softmax, ScoreKind::Probability}) {
        for (int i = 0; i < 12; ++i) {
            const int y = (i * 7) % g.out_h, x = (i * 11) % g.out_w;
            LabelOptions o;
            o.score_kind = kind;
            o.score_threshold = reference_p(logits, th, tw, y, x, kind);
            if (!(o.score_threshold > 0 && o.score_threshold < 1)) continue;
            expect_same(logits, g, o);
            o.method = LabelMethod::Exact;
            EXPECT_NE(label_map(logits, g.out_h, g.out_w, g.span_h, g.span_w, o).labels.at<int32_t>(y, x), kUnknown);
        }
    }
}

TEST(LabelMap, SmoothFieldsAreMostlyFilledWhole) {
    std::mt19937 rng(3);
    const Tensor logits = make_logits(Field::Sharp, 20, 45, 80, rng);
    LabelOptions o;
    o.score_threshold = 0.6;
    const LabelMap m = expect_same(logits, {720, 1280, 720, 1280}, o);
    ASSERT_TRUE(m.fast);
    EXPECT_EQ(m.cells, 44 * 79);
    EXPECT_GT(m.cells_filled, m.cells / 2);
    EXPECT_GT(cv::countNonZero(m.labels == kUnknown), 0);
}

TEST(LabelMap, OneRowOrColumnAndNonFiniteUseTheExactPath) {
    std::mt19937 rng(5);
    for (const auto& [h, w] : {std::pair{1, 7}, {6, 1}, {1, 1}}) {
        const Tensor logits = make_logits(Field::NearTies, 5, h, w, rng, true);
        EXPECT_FALSE(expect_same(logits, {9, 23, 9, 23}, {}).fast);
    }
    Tensor logits = make_logits(Field::Smooth, 4, 3, 3, rng);
    logits.data[5] = std::numeric_limits<float>::quiet_NaN();
    LabelOptions o;
    const LabelMap m = label_map(logits, 8, 8, 8, 8, o);
    EXPECT_FALSE(m.fast);
    o.method = LabelMethod::Exact;
    EXPECT_EQ(cv::countNonZero(m.labels != label_map(logits, 8, 8, 8, 8, o).labels), 0);
}

TEST(LabelMap, NanBeatsNumbersLikeNumpy) {
    Tensor logits = Tensor::zeros({3, 2, 2});
    for (int i = 0; i < 4; ++i) logits.data[i] = 5.0f;  // class 0 wins on numbers
    logits.data[8] = std::numeric_limits<float>::quiet_NaN();  // class 2, corner (0, 0)
    const LabelMap m = label_map(logits, 4, 4, 4, 4);
    EXPECT_FALSE(m.fast);
    EXPECT_EQ(m.labels.at<int32_t>(0, 0), 2);  // taps on corner (0, 0): NaN * w is NaN
    EXPECT_EQ(m.labels.at<int32_t>(1, 1), 2);
    EXPECT_EQ(m.labels.at<int32_t>(3, 3), 0);  // clamped to corner (1, 1) alone: numbers only
}

TEST(LabelMap, ThresholdNeedsAtMost255ClassesAndValidRanges) {
    const Tensor big = Tensor::zeros({256, 2, 2}), ok = Tensor::zeros({255, 2, 2});
    LabelOptions o;
    o.score_threshold = 0.5;
    EXPECT_THROW(label_map(big, 4, 4, 4, 4, o), ConfigError);
    EXPECT_EQ(cv::countNonZero(label_map(ok, 4, 4, 4, 4, o).labels == kUnknown), 16);  // p = 1/255
    o.score_threshold = 1.0;
    EXPECT_THROW(label_map(ok, 4, 4, 4, 4, o), ConfigError);
    o.score_threshold = 0, o.background_thd = -0.1;
    EXPECT_THROW(label_map(ok, 4, 4, 4, 4, o), ConfigError);
    EXPECT_THROW(label_map(Tensor::zeros({2, 2}), 4, 4, 4, 4), ConfigError);
    EXPECT_THROW(label_map(ok, 0, 4, 4, 4), ConfigError);
    EXPECT_EQ(parse_score_kind("probability"), ScoreKind::Probability);
    EXPECT_THROW(parse_score_kind("sigmoid"), ConfigError);
    EXPECT_EQ(parse_label_method("exact"), LabelMethod::Exact);
    EXPECT_THROW(parse_label_method("quick"), ConfigError);
}

TEST(LabelMap, BackgroundThenUnknown) {
    // [2,1,2]: left p_top = 1/(1+e^-3) ~ 0.953 (class 1), right p_top = 0.5 (a tie: class 0).
    Tensor logits = Tensor::zeros({2, 1, 2});
    logits.data[2] = 3.0f;
    LabelOptions o;
    o.background_thd = 0.6, o.score_threshold = 0.55, o.with_scores = true;
    const LabelMap m = label_map(logits, 1, 2, 1, 2, o);
    EXPECT_EQ(m.labels.at<int32_t>(0, 0), 1);
    EXPECT_EQ(m.labels.at<int32_t>(0, 1), kUnknown);  // background first, then unknown wins
    EXPECT_NEAR(m.scores.at<float>(0, 0), 1.0 / (1.0 + std::exp(-3.0)), 1e-7);
    EXPECT_FLOAT_EQ(m.scores.at<float>(0, 1), 0.5f);
    o.score_threshold = 0.4;
    EXPECT_EQ(label_map(logits, 1, 2, 1, 2, o).labels.at<int32_t>(0, 1), 0);
    o.score_kind = ScoreKind::Probability, o.background_thd = 0, o.score_threshold = 0.5;
    const LabelMap p = label_map(logits, 1, 2, 1, 2, o);  // probability: p_top = v_top (3 and 0)
    EXPECT_EQ(p.labels.at<int32_t>(0, 0), 1);
    EXPECT_EQ(p.labels.at<int32_t>(0, 1), kUnknown);
    EXPECT_FLOAT_EQ(p.scores.at<float>(0, 0), 1.0f);  // the map clips probabilities to [0, 1]
    o.score_kind = ScoreKind::Softmax, o.score_scale = 0.5;  // p = 1 / (1 + e^(-1.5))
    EXPECT_NEAR(label_map(logits, 1, 2, 1, 2, o).scores.at<float>(0, 0), 1.0 / (1.0 + std::exp(-1.5)), 1e-7);
    o.score_scale = 0;
    EXPECT_THROW(label_map(logits, 1, 2, 1, 2, o), ConfigError);
}
