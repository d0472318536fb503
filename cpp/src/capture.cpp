// Reader (pacing, reconnect with exponential backoff) and the capture thread.
#include "ovss/capture.hpp"

#include <algorithm>
#include <cmath>
#include <iostream>

#include "ovss/errors.hpp"

namespace ovss {

bool StopFlag::wait(double seconds) const {
    const double end = now_s() + seconds;
    while (!is_set()) {
        const double left = end - now_s();
        if (left <= 0) return false;
        std::this_thread::sleep_for(std::chrono::duration<double>(std::min(left, 0.02)));
    }
    return true;
}

std::optional<double> Ring::percentile(double q) const {
    const size_t n = size();
    if (n == 0) return std::nullopt;
    std::vector<double> v(data_.begin(), data_.begin() + static_cast<std::ptrdiff_t>(n));
    std::sort(v.begin(), v.end());
    const double pos = q / 100.0 * static_cast<double>(n - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(lo + 1, n - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

Reader::Reader(FrameSource& src, StopFlag& stop_flag, ReaderCfg cfg)
    : source(src), stop(stop_flag), cfg_(cfg), delay_(cfg.backoff_initial_s) {
    if (!(cfg.backoff_initial_s > 0 && cfg.backoff_initial_s <= cfg.backoff_max_s))
        throw ConfigError("need 0 < reconnect delay <= reconnect max delay");
}

std::optional<Frame> Reader::next() {
    while (!stop.is_set()) {
        if (!pace()) return std::nullopt;
        auto frame = read_once();
        if (frame) {
            ++captured;
            outage_attempts_ = 0, delay_ = cfg_.backoff_initial_s;
            return frame;
        }
        if (!source.live) return std::nullopt;
        reconnect();
    }
    return std::nullopt;
}

bool Reader::pace() {
    if (cfg_.pace_fps <= 0) return true;
    const double now = now_s();
    if (t0_ < 0) t0_ = now;
    const double wait = t0_ + static_cast<double>(captured) / cfg_.pace_fps - now;
    if (wait < 0) {  // behind (the loop stalled): re-anchor rather than burst to catch up
        t0_ -= wait;
        return true;
    }
    return !stop.wait(wait);
}

std::optional<Frame> Reader::read_once() {
    const double t0 = now_s();
    std::optional<Frame> frame;
    try {
        frame = source.read();
    } catch (const std::exception& e) {
        if (!source.live) throw SourceError(source.name + " failed: " + e.what());
        std::cerr << "warning: " << source.name << ": read failed: " << e.what() << "\n";
        return std::nullopt;
    }
    if (frame) read_ms.append((now_s() - t0) * 1e3);
    return frame;
}

void Reader::reconnect() {
    while (!stop.is_set()) {
        const int attempt = outage_attempts_;
        const double delay = delay_;
        if (cfg_.reconnect_attempts && attempt >= cfg_.reconnect_attempts)
            throw SourceError(source.name + " failed and " + std::to_string(attempt) +
                              " reconnect attempts did not bring it back");
        ++outage_attempts_;
        delay_ = std::min(2 * delay, cfg_.backoff_max_s);
        std::cerr << "warning: " << source.name << ": no frame; reopening in " << delay << " s (attempt "
                  << attempt + 1 << ")\n";
        if (stop.wait(delay)) return;
        ++attempts;
        try {
            source.reopen();
        } catch (const std::exception& e) {
            std::cerr << "warning: " << source.name << ": reopen failed: " << e.what() << "\n";
            continue;
        }
        ++reconnects;
        return;
    }
}

struct CaptureThread::State {
    std::shared_ptr<Reader> reader;
    std::shared_ptr<FrameQueue<Frame>> frames;
    std::mutex mu;
    std::condition_variable done_cv;
    bool done = false;
    std::optional<std::string> error;
};

CaptureThread::CaptureThread(std::shared_ptr<Reader> reader, std::shared_ptr<FrameQueue<Frame>> frames)
    : state_(std::make_shared<State>()) {
    state_->reader = std::move(reader);
    state_->frames = std::move(frames);
    thread_ = std::thread([s = state_] {
        try {
            while (auto frame = s->reader->next())
                if (!s->frames->put(std::move(*frame), s->reader->stop)) break;
        } catch (const std::exception& e) {
            std::lock_guard<std::mutex> lock(s->mu);
            s->error = e.what();
        }
        s->frames->close();
        std::lock_guard<std::mutex> lock(s->mu);
        s->done = true;
        s->done_cv.notify_all();
    });
}

CaptureThread::~CaptureThread() {
    if (thread_.joinable()) join(5.0);
}

bool CaptureThread::join(double timeout_s) {
    state_->reader->stop.set();
    std::unique_lock<std::mutex> lock(state_->mu);
    const bool done = state_->done_cv.wait_for(lock, std::chrono::duration<double>(timeout_s),
                                               [this] { return state_->done; });
    lock.unlock();
    if (done && thread_.joinable()) thread_.join();
    else if (thread_.joinable()) thread_.detach();
    return done;
}

std::optional<std::string> CaptureThread::error() const {
    std::lock_guard<std::mutex> lock(state_->mu);
    return state_->error;
}

}  // namespace ovss
