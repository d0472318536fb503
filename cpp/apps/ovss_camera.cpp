// ovss_camera: capture thread -> bounded queue -> segment -> overlay -> video/PNGs/window
// (runtime/camera.py).
//
//   ovss_camera --model DIR --source {INDEX|/dev/videoN|FILE|rtsp://...|gst:PIPELINE|DIR}
//               [--out FILE.mp4|FILE.avi|DIR] [--max-frames N] [--queue N] [--json STATS] [--show]
//               [--threads N] [--mode M] [--backend B] [--engine FILE] [--drop auto|oldest|never]
//               [--realtime] [--fps F] [--alpha A] [--no-legend] [--fourcc MJPG] [--capture-size WxH]
//               [--reconnect-delay S] [--reconnect-max-delay S] [--reconnect-attempts N]
//               [--score-threshold T] [--postprocess fast|exact] [--max-pixels N]
//
// --score-threshold T in [0,1): pixels whose top-class score is below T are "unknown" (label
// 255: left unblended, listed last in the legend). --postprocess exact: the reference label
// computation (same labels as the default fast one, slower).
//
// --max-pixels N (default 50,000,000; 0: no limit): a single image, or a video/stream whose
// frames are larger, is an error (exit 2); image folders skip such files (counted in
// frames_skipped). --out and --json are checked before the model is loaded (an existing folder
// where a file is needed, or the reverse, an ancestor that is a file, no permission: exit 2);
// --threads is 1..256 and --queue 1..1024.
//
// Live sources drop the OLDEST queued frame when the queue is full and reopen with exponential
// backoff; finite ones wait for room so every frame is processed. SIGINT/SIGTERM stop cleanly
// (the video is finalised, stats written, exit 0); a second signal kills. Prints one JSON line of
// stats; exit status 2 on bad input or when a source fails for good.
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include <nlohmann/json.hpp>

#include "ovss/capture.hpp"
#include "ovss/cli.hpp"
#include "ovss/errors.hpp"
#include "ovss/outputs.hpp"
#include "ovss/segmenter.hpp"
#include "ovss/sources.hpp"
#include "ovss/video_out.hpp"

namespace {

using nlohmann::json;

const char* kUsage =
    "usage: ovss_camera --model DIR --source SRC [--out FILE.mp4|DIR] [--max-frames N] [--queue N]\n"
    "                   [--json STATS] [--show] [--threads N] [--mode auto|whole|slide] [--drop auto|oldest|never]\n"
    "                   [--realtime] [--fps F] [--alpha A] [--no-legend] [--fourcc XXXX] [--capture-size WxH]\n"
    "                   [--reconnect-delay S] [--reconnect-max-delay S] [--reconnect-attempts N]\n"
    "                   [--score-threshold T] [--postprocess fast|exact] [--precision fp32] [--max-pixels N]\n"
    "                   [--help]\n"
    "fp16/int8 variants and --classes: python -m runtime.camera (this program runs the fp32 graph\n"
    "and the folder's own vocabulary).\n";

ovss::StopFlag g_stop;
volatile std::sig_atomic_t g_signals = 0;

extern "C" void on_signal(int signum) {
    if (++g_signals > 1) {  // second signal: stop now
        std::signal(signum, SIG_DFL);
        std::raise(signum);
    }
    g_stop.set();
}

/// Per-frame work and its bounded timing samples.
struct Step {
    Step(ovss::Segmenter& s, ovss::Painter p, ovss::Sink& out) : seg(s), painter(std::move(p)), sink(out) {}

    ovss::Segmenter& seg;
    ovss::Painter painter;
    ovss::Sink& sink;
    int64_t processed = 0;
    ovss::Ring latency_ms;
    std::map<std::string, ovss::Ring> stages;

    void operator()(const ovss::Frame& frame) {
        const double t0 = ovss::now_s();
        const ovss::SegResult r = seg(frame.image);
        const double t1 = ovss::now_s();
        const cv::Mat shown = painter(frame.image, r.labels, r.classes);
        const double t2 = ovss::now_s();
        sink.write(shown, frame);
        const double t3 = ovss::now_s();
        ++processed;
        latency_ms.append((t3 - frame.t_capture) * 1e3);
        const std::pair<const char*, double> ms[] = {
            {"wait", (t0 - frame.t_capture) * 1e3}, {"segment", (t1 - t0) * 1e3}, {"render", (t2 - t1) * 1e3},
            {"write", (t3 - t2) * 1e3}, {"preprocess", r.timings.preprocess_ms},
            {"inference", r.timings.inference_ms}, {"postprocess", r.timings.postprocess_ms}};
        for (const auto& [name, v] : ms) stages[name].append(v);
    }
};

json pct(const ovss::Ring& ring, double q) {
    const auto v = ring.percentile(q);
    return v ? json(std::round(*v * 1000.0) / 1000.0) : json(nullptr);
}

struct LoopOut {
    std::string reason;
    std::optional<std::string> error;
    double elapsed_s = 0;
    size_t dropped = 0, high_water = 0;
    bool joined = true;  ///< false: the capture thread is stuck in a read and still uses the source
};

/// The pipelined loop; returns why it stopped. ``stop`` is set on return.
LoopOut run_loop(std::shared_ptr<ovss::Reader> reader, Step& step, size_t queue_size, bool drop_oldest,
                 int max_frames) {
    auto frames = std::make_shared<ovss::FrameQueue<ovss::Frame>>(queue_size, drop_oldest);
    const double t0 = ovss::now_s();
    LoopOut out{"stopped", std::nullopt};
    ovss::CaptureThread capture(reader, frames);
    while (!g_stop.is_set()) {
        ovss::Frame frame;
        const auto got = frames->get(frame, std::chrono::milliseconds(100));
        if (got == ovss::FrameQueue<ovss::Frame>::Got::Empty) continue;
        if (got == ovss::FrameQueue<ovss::Frame>::Got::Closed) {
            out.error = capture.error();
            out.reason = out.error ? "source_failed" : (g_stop.is_set() ? "stopped" : "end");
            break;
        }
        step(frame);
        if (max_frames && step.processed >= max_frames) {
            out.reason = "max_frames";
            break;
        }
    }
    out.elapsed_s = ovss::now_s() - t0;
    g_stop.set();
    out.joined = capture.join(5.0);
    if (!out.joined) std::cerr << "warning: capture thread still blocked in a read after 5 s: leaving the source open\n";
    out.dropped = frames->dropped(), out.high_water = frames->high_water();
    return out;
}

ovss::SourceCfg source_cfg(const ovss::Args& args) {
    ovss::SourceCfg cfg;
    cfg.max_pixels = ovss::max_pixels_flag(args);
    cfg.fourcc = args.get("--fourcc").value_or("");
    if (!cfg.fourcc.empty() && cfg.fourcc.size() != 4) throw ovss::ConfigError("--fourcc must be 4 characters, e.g. MJPG");
    if (const auto size = args.get("--capture-size")) {
        char tail = 0;
        if (std::sscanf(size->c_str(), "%dx%d%c", &cfg.width, &cfg.height, &tail) != 2 || cfg.width <= 0 ||
            cfg.height <= 0 || cfg.width > ovss::kMaxSidePixels || cfg.height > ovss::kMaxSidePixels)
            throw ovss::ConfigError("--capture-size must be WIDTHxHEIGHT, e.g. 1280x720");
    }
    return cfg;
}

ovss::SegmenterOptions seg_options(const ovss::Args& args) {
    ovss::SegmenterOptions o;
    o.backend = args.get("--backend").value_or("auto");
    o.mode = args.get("--mode").value_or("auto");
    o.backend_options.threads = args.get_int("--threads", 0, 1, ovss::kMaxThreads);
    o.backend_options.engine = args.get("--engine").value_or("");
    o.score_threshold = args.get_double("--score-threshold", 0.0, 0.0, 1.0);
    if (o.score_threshold >= 1.0) throw ovss::ConfigError("--score-threshold must be in [0, 1)");
    o.label_method = ovss::parse_label_method(args.get("--postprocess").value_or("fast"));
    return o;
}

/// --out (a video file by its suffix, else a PNG folder) and --json can be written, before the
/// model is loaded. Throws OutputPathError.
void check_outputs(const ovss::Args& args) {
    namespace fs = std::filesystem;
    if (const auto out = args.get("--out")) {
        if (fs::path(*out).has_extension() && !fs::is_directory(*out)) {
            const std::string ext = fs::path(*out).extension().string();
            if (ext != ".mp4" && ext != ".avi" && ext != ".MP4" && ext != ".AVI")
                throw ovss::ConfigError("--out must be a .mp4 / .avi video or a folder, got '" + *out + "'");
            ovss::check_output_file(*out, "--out");
        }
        else ovss::check_output_dir(*out, "--out");
    }
    if (const auto path = args.get("--json")) ovss::check_output_file(*path, "--json");
}

json stats_json(const ovss::FrameSource& source, const ovss::Reader& reader, const Step& step, const LoopOut& out,
                size_t queue_size) {
    json stages = json::object();
    stages["read"] = pct(reader.read_ms, 50);
    for (const auto& [name, ring] : step.stages) stages[name] = pct(ring, 50);
    const double fps = out.elapsed_s > 0 ? step.processed / out.elapsed_s : 0.0;
    return {{"source", source.name}, {"live", source.live}, {"pipelined", true}, {"stop_reason", out.reason},
            {"error", out.error ? json(*out.error) : json(nullptr)}, {"frames_captured", reader.captured},
            {"frames_processed", step.processed}, {"frames_dropped", out.dropped},
            {"frames_skipped", source.skipped}, {"reconnects", reader.reconnects},
            {"reconnect_attempts", reader.attempts}, {"queue_size", queue_size},
            {"queue_high_water", out.high_water}, {"elapsed_s", std::round(out.elapsed_s * 1000.0) / 1000.0},
            {"fps", std::round(fps * 1000.0) / 1000.0}, {"latency_p50_ms", pct(step.latency_ms, 50)},
            {"latency_p90_ms", pct(step.latency_ms, 90)}, {"latency_p99_ms", pct(step.latency_ms, 99)},
            {"stage_median_ms", stages}};
}

int run(int argc, char** argv) {
    const ovss::Args args(argc, argv,
                          {"--model", "--source", "--out", "--max-frames", "--queue", "--json", "--threads", "--mode",
                           "--backend", "--engine", "--drop", "--fps", "--alpha", "--fourcc", "--capture-size",
                           "--reconnect-delay", "--reconnect-max-delay", "--reconnect-attempts", "--score-threshold",
                           "--postprocess", "--precision", "--classes", "--max-pixels"},
                          {"--show", "--realtime", "--no-legend"});
    const std::string model = args.require("--model"), spec = args.require("--source");
    const int max_frames = args.get_int("--max-frames", 0, 1), queue_size = args.get_int("--queue", 2, 1, 1024);
    const std::string drop = args.get("--drop").value_or("auto");
    if (drop != "auto" && drop != "oldest" && drop != "never") throw ovss::ConfigError("--drop must be auto, oldest or never");
    const double fps_arg = args.get_double("--fps", 0, 1e-3, 1000);
    ovss::ReaderCfg rcfg{0, args.get_double("--reconnect-delay", 0.5, 1e-3, 3600),
                         args.get_double("--reconnect-max-delay", 8.0, 1e-3, 3600),
                         args.get_int("--reconnect-attempts", 0, 0)};
    const double alpha = args.get_double("--alpha", 0.5, 0.0, 1.0);
    const ovss::SourceCfg scfg = source_cfg(args);
    const ovss::SegmenterOptions sopts = seg_options(args);
    check_outputs(args);
    ovss::check_model_flags(args, model);
    ovss::Segmenter seg(model, sopts);
    std::shared_ptr<ovss::FrameSource> source = ovss::open_source(spec, scfg);
    if (args.has("--realtime")) rcfg.pace_fps = source->fps > 0 ? source->fps : (fps_arg > 0 ? fps_arg : ovss::kDefaultFps);
    auto sink = ovss::open_sink(args.get("--out"), fps_arg > 0 ? fps_arg : source->fps, args.has("--show"), g_stop);
    const bool unknown = seg.options().score_threshold > 0;
    ovss::Painter painter(alpha, !args.has("--no-legend"), unknown);
    Step step(seg, std::move(painter), *sink);
    auto reader = std::make_shared<ovss::Reader>(*source, g_stop, rcfg);
    const bool drop_oldest = drop == "oldest" || (drop == "auto" && source->live);
    LoopOut out;
    try {
        out = run_loop(reader, step, static_cast<size_t>(queue_size), drop_oldest, max_frames);
    } catch (...) {
        sink->abort();  // a crash must not replace a previous good output with a partial one
        throw;
    }
    if (g_signals) std::cerr << "warning: signal received: stopping cleanly (frames so far are kept)" << std::endl;
    sink->close();
    if (out.joined) source->close();
    else new std::shared_ptr<ovss::FrameSource>(source);  // deliberately leaked: the stuck thread still reads it
    json report = stats_json(*source, *reader, step, out, static_cast<size_t>(queue_size));
    report.update({{"model", model}, {"backend", seg.backend().name()}, {"precision", "fp32"},
                   {"providers", seg.backend().providers()}, {"classes", seg.classes().size()},
                   {"weights_random", seg.manifest().weights.random},
                   {"score_threshold", seg.options().score_threshold},
                   {"postprocess", ovss::label_method_name(seg.options().label_method)},
                   {"out", args.get("--out") ? json(*args.get("--out")) : json(nullptr)}});
    if (const auto path = args.get("--json")) {
        const std::string tmp = *path + ".tmp";
        std::ofstream(tmp) << report.dump(2) << "\n";
        if (std::rename(tmp.c_str(), path->c_str()) != 0) throw ovss::OvssError("cannot write '" + *path + "'");
    }
    if (out.error) std::cerr << "error: " << *out.error << std::endl;
    std::cout << report.dump() << std::endl;
    return out.reason == "source_failed" ? 2 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    return ovss::guarded_main(kUsage, run, argc, argv);
}
