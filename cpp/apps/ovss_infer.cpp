// ovss_infer: segment one image with a deployable folder; print one JSON line (runtime/infer.py).
//
//   ovss_infer --model DIR --image IMG --out OVERLAY.png [--labels-out L.png|L.npy] [--threads N]
//              [--mode auto|whole|slide] [--stride PX] [--slide-edge flush|grid] [--short-side PX]
//              [--repeat N] [--backend B] [--engine FILE]
//              [--score-threshold T] [--scores-out S.npy|S.png] [--postprocess fast|exact]
//              [--alpha A] [--no-legend] [--no-verify] [--max-pixels N]
//
// --labels-out: a palette PNG whose pixel values are the class indices (255: unknown, grey), or
// an int32 .npy. --score-threshold T in [0,1): pixels whose top-class score (the manifest's
// "score": softmax probability, or the method's own probability) is below T are labelled 255,
// "unknown" (left unblended in the overlay, listed in the legend). --scores-out: that score per
// pixel, float32 .npy or 8-bit PNG (round(255 p)). --postprocess exact: the reference label
// computation instead of the fast one (same labels; for checks and timings). --slide-edge: slide
// window placement, flush (the official plan, the default unless the manifest's method_cfg says
// otherwise) or grid (feature-grid windows, faster).
//
// --max-pixels N: images over N pixels (H*W) are refused from their header, before decoding
// (default 50,000,000; 0: no limit). Output paths (--out, --labels-out, --scores-out) are
// checked before the image is read: an existing folder, an ancestor that is a file or no write
// permission is an error. --threads is 1..256, --repeat 1..10000; slide plans of more than
// 10,000 windows are refused.
//
// Exit status 2 with a one-line "error: ..." on bad input. --repeat N segments the image N times
// and reports median timings (and every run's total) for benchmarks.
#include <algorithm>
#include <chrono>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "ovss/cli.hpp"
#include "ovss/errors.hpp"
#include "ovss/image.hpp"
#include "ovss/label_map.hpp"
#include "ovss/npy.hpp"
#include "ovss/outputs.hpp"
#include "ovss/png.hpp"
#include "ovss/postprocess.hpp"
#include "ovss/segmenter.hpp"

namespace {

const char* kUsage =
    "usage: ovss_infer --model DIR --image IMG --out OVERLAY.png [--labels-out L.png|L.npy] [--threads N]\n"
    "                  [--mode auto|whole|slide] [--stride PX] [--slide-edge flush|grid] [--short-side PX]\n"
    "                  [--repeat N]\n"
    "                  [--backend auto|onnxruntime|tensorrt] [--engine FILE]\n"
    "                  [--score-threshold T] [--scores-out S.npy|S.png] [--postprocess fast|exact]\n"
    "                  [--alpha A] [--no-legend] [--no-verify] [--precision fp32] [--max-pixels N] [--help]\n"
    "fp16/int8 variants and --classes: python -m runtime.infer (this program runs the fp32 graph\n"
    "and the folder's own vocabulary).\n";

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double round3(double v) { return std::round(v * 1000.0) / 1000.0; }
double round6(double v) { return std::round(v * 1e6) / 1e6; }

ovss::SegmenterOptions options(const ovss::Args& args) {
    ovss::SegmenterOptions o;
    o.backend = args.get("--backend").value_or("auto");
    o.mode = args.get("--mode").value_or("auto");
    o.stride = args.get_int("--stride", 0, 1, ovss::kMaxSidePixels);
    o.slide_edge = args.get("--slide-edge").value_or("");  // "": the manifest's, else flush
    if (o.slide_edge != "" && o.slide_edge != "flush" && o.slide_edge != "grid")
        throw ovss::ConfigError("--slide-edge must be flush or grid, got '" + o.slide_edge + "'");
    o.short_side = args.get_int("--short-side", -1, 0, ovss::kMaxSidePixels);  // -1: the manifest's; 0: none
    o.verify = !args.has("--no-verify");
    o.backend_options.threads = args.get_int("--threads", 0, 1, ovss::kMaxThreads);
    o.backend_options.engine = args.get("--engine").value_or("");
    o.score_threshold = args.get_double("--score-threshold", 0.0, 0.0, 1.0);
    if (o.score_threshold >= 1.0) throw ovss::ConfigError("--score-threshold must be in [0, 1)");
    o.with_scores = args.has("--scores-out");
    o.label_method = ovss::parse_label_method(args.get("--postprocess").value_or("fast"));
    return o;
}

std::string suffix(const std::string& path) {
    std::string ext = std::filesystem::path(path).extension().string();
    for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return ext;
}

/// .png or .npy, else a ConfigError naming ``flag`` (checked before the model is loaded).
void check_suffix(const ovss::Args& args, const std::string& flag) {
    const auto path = args.get(flag);
    if (path && suffix(*path) != ".png" && suffix(*path) != ".npy")
        throw ovss::ConfigError(flag + " must end in .png or .npy, got '" + *path + "'");
}

/// Every output path can be written (and --out has an image suffix OpenCV encodes), before the
/// image is read or the model loaded. Throws OutputPathError / ConfigError.
void check_outputs(const ovss::Args& args) {
    const std::string out = args.require("--out");
    if (!cv::haveImageWriter(out))
        throw ovss::ConfigError("--out must end in an image suffix (.png, .jpg, ...), got '" + out + "'");
    ovss::check_output_file(out, "--out");
    for (const char* flag : {"--labels-out", "--scores-out"})
        if (const auto path = args.get(flag)) ovss::check_output_file(*path, flag);
}

/// An HxW Mat of T (int32 labels, float32 scores) as a 2-D .npy.
template <class T>
void write_mat_npy(const std::string& path, const cv::Mat& m) {
    const cv::Mat c = m.isContinuous() ? m : m.clone();
    ovss::write_npy(path, ovss::make_npy(std::vector<T>(c.begin<T>(), c.end<T>()), {c.rows, c.cols}));
}

/// Median per-stage timings over ``runs`` and every run's total.
nlohmann::json timing_json(const std::vector<ovss::Timings>& runs, const std::vector<double>& walls) {
    std::vector<double> pre, inf, post, total;
    for (const auto& t : runs) {
        pre.push_back(t.preprocess_ms), inf.push_back(t.inference_ms), post.push_back(t.postprocess_ms);
        total.push_back(t.total_ms());
    }
    nlohmann::json j;
    j["timings_ms"] = {{"preprocess", round3(median(pre))}, {"inference", round3(median(inf))},
                       {"postprocess", round3(median(post))}};
    j["total_ms"] = round3(median(total));
    j["call_ms"] = round3(median(walls));
    if (runs.size() > 1) {
        std::vector<double> rounded;
        for (double w : walls) rounded.push_back(round3(w));
        j["runs_call_ms"] = rounded;
    }
    return j;
}

void write_outputs(const ovss::Args& args, const cv::Mat& rgb, const ovss::SegResult& r, double alpha) {
    const auto colours = ovss::palette(static_cast<int>(r.classes.size()));
    cv::Mat shown = ovss::overlay(rgb, r.labels, colours, alpha);
    if (!args.has("--no-legend")) {
        std::vector<std::string> names = r.classes_present;
        std::vector<ovss::Rgb> present;
        for (const auto& name : r.classes_present)
            present.push_back(colours[std::find(r.classes.begin(), r.classes.end(), name) - r.classes.begin()]);
        if (r.unknown_pixels > 0) names.push_back("unknown"), present.push_back(ovss::kUnknownColour);
        cv::vconcat(shown, ovss::legend_strip(names, present, shown.cols), shown);
    }
    ovss::save_image_atomic(args.require("--out"), shown);
    if (const auto path = args.get("--labels-out")) {
        if (suffix(*path) == ".npy") write_mat_npy<int32_t>(*path, r.labels);
        else ovss::write_label_png(*path, r.labels, colours);
    }
    if (const auto path = args.get("--scores-out")) {
        if (suffix(*path) == ".npy") write_mat_npy<float>(*path, r.scores);
        else ovss::save_image_atomic(*path, ovss::scores_to_u8(r.scores));
    }
}

int run(int argc, char** argv) {
    const ovss::Args args(argc, argv,
                          {"--model", "--image", "--out", "--labels-out", "--threads", "--mode", "--stride",
                           "--slide-edge", "--short-side", "--repeat", "--backend", "--engine", "--alpha",
                           "--score-threshold", "--scores-out", "--postprocess", "--precision", "--classes",
                           "--max-pixels"},
                          {"--no-legend", "--no-verify"});
    const std::string model = args.require("--model"), image_path = args.require("--image");
    args.require("--out");
    const int repeat = args.get_int("--repeat", 1, 1, ovss::kMaxRepeat);
    const double alpha = args.get_double("--alpha", 0.5, 0.0, 1.0);
    const int64_t max_pixels = ovss::max_pixels_flag(args);
    const ovss::SegmenterOptions seg_options = options(args);
    check_suffix(args, "--labels-out");
    check_suffix(args, "--scores-out");
    check_outputs(args);
    ovss::check_model_flags(args, model);
    const cv::Mat rgb = ovss::load_image(image_path, max_pixels);
    ovss::Segmenter seg(model, seg_options);
    ovss::SegResult result;
    std::vector<ovss::Timings> runs;
    std::vector<double> walls;
    for (int i = 0; i < repeat; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        result = seg(rgb);
        walls.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        runs.push_back(result.timings);
    }
    write_outputs(args, rgb, result, alpha);
    nlohmann::json line = {{"backend", result.backend}, {"precision", "fp32"}, {"providers", result.providers},
                           {"classes", result.classes.size()}, {"classes_present", result.classes_present}};
    line.update(timing_json(runs, walls));
    line.update({{"postprocess", result.postprocess}, {"score", seg.manifest().score},
                 {"score_threshold", seg.options().score_threshold},
                 {"unknown_fraction", round6(static_cast<double>(result.unknown_pixels) / result.labels.total())}});
    line.update({{"mode", result.mode}, {"windows", result.windows}, {"image_hw", {rgb.rows, rgb.cols}},
                 {"weights_random", seg.manifest().weights.random}, {"repeat", repeat},
                 {"out", args.require("--out")}});
    std::cout << line.dump() << std::endl;
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return ovss::guarded_main(kUsage, run, argc, argv);
}
