// The capture side of the camera loop (runtime/frame_queue.py): a stop flag, the bounded frame
// queue, a Reader that paces and reconnects, and the capture thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ovss/sources.hpp"

namespace ovss {

/// A stop request that a signal handler may set (a lock-free atomic store).
class StopFlag {
public:
    void set() { flag_.store(true); }
    bool is_set() const { return flag_.load(); }
    /// Sleep up to ``seconds``; true as soon as the flag is set (polled every 20 ms).
    bool wait(double seconds) const;

private:
    std::atomic<bool> flag_{false};
};

/// Bounded FIFO for one producer and one consumer. When full, ``put`` drops the OLDEST item
/// (live cameras: the newest frame is worth segmenting) or waits for room (files: every frame).
template <class T>
class FrameQueue {
public:
    enum class Got { Item, Empty, Closed };

    FrameQueue(size_t size, bool drop_oldest) : size_(size), drop_oldest_(drop_oldest) {}

    /// Add ``item``; false (not added) when closed, or when ``stop`` is set while waiting.
    bool put(T item, const StopFlag& stop) {
        std::unique_lock<std::mutex> lock(mu_);
        while (!drop_oldest_ && items_.size() >= size_) {
            if (closed_ || stop.is_set()) return false;
            cv_.wait_for(lock, std::chrono::milliseconds(50));
        }
        if (closed_) return false;
        if (items_.size() >= size_) items_.pop_front(), ++dropped_;
        items_.push_back(std::move(item));
        high_water_ = std::max(high_water_, items_.size());
        cv_.notify_all();
        return true;
    }

    /// Take the oldest item into ``out``: Empty after ``timeout``, Closed when closed and drained.
    Got get(T& out, std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lock(mu_);
        if (!cv_.wait_for(lock, timeout, [this] { return !items_.empty() || closed_; })) return Got::Empty;
        if (items_.empty()) return Got::Closed;
        out = std::move(items_.front());
        items_.pop_front();
        cv_.notify_all();
        return Got::Item;
    }

    /// No more puts; ``get`` drains what is left, then reports Closed.
    void close() {
        std::lock_guard<std::mutex> lock(mu_);
        closed_ = true;
        cv_.notify_all();
    }

    size_t dropped() const { std::lock_guard<std::mutex> l(mu_); return dropped_; }
    size_t high_water() const { std::lock_guard<std::mutex> l(mu_); return high_water_; }

private:
    const size_t size_;
    const bool drop_oldest_;
    std::deque<T> items_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool closed_ = false;
    size_t dropped_ = 0, high_water_ = 0;
};

/// The last ``size`` samples (memory stays flat however long the loop runs).
class Ring {
public:
    explicit Ring(size_t size = 10000) : data_(size) {}
    void append(double v) { data_[count_++ % data_.size()] = v; }
    size_t size() const { return std::min(count_, data_.size()); }
    /// numpy.percentile (linear interpolation) of the samples; nullopt when empty.
    std::optional<double> percentile(double q) const;

private:
    std::vector<double> data_;
    size_t count_ = 0;
};

struct ReaderCfg {
    double pace_fps = 0;             ///< deliver a finite source at this rate (0: as fast as read)
    double backoff_initial_s = 0.5;  ///< first reopen delay, doubling up to backoff_max_s
    double backoff_max_s = 8.0;
    int reconnect_attempts = 0;      ///< per outage; 0: never give up
};

/// Reads frames, paces finite sources when asked, reopens failed live ones with backoff.
class Reader {
public:
    Reader(FrameSource& source, StopFlag& stop, ReaderCfg cfg);
    /// The next frame; nullopt when the source ended or stop is set. Throws SourceError when a
    /// live source stayed down for ``reconnect_attempts`` attempts, or a finite one failed.
    std::optional<Frame> next();

    FrameSource& source;
    StopFlag& stop;
    int64_t captured = 0, reconnects = 0, attempts = 0;
    Ring read_ms;

private:
    bool pace();
    std::optional<Frame> read_once();
    void reconnect();

    ReaderCfg cfg_;
    double t0_ = -1, delay_;
    int outage_attempts_ = 0;
};

/// A thread moving frames from a Reader into a FrameQueue until the source ends or stop is set;
/// then it closes the queue. ``error()`` holds the message it stopped on, if any.
class CaptureThread {
public:
    CaptureThread(std::shared_ptr<Reader> reader, std::shared_ptr<FrameQueue<Frame>> frames);
    ~CaptureThread();
    /// Set stop, wait up to ``timeout_s``; false if the thread is still stuck in a read (it is then
    /// detached and keeps its own references alive).
    bool join(double timeout_s);
    std::optional<std::string> error() const;

private:
    struct State;
    std::shared_ptr<State> state_;
    std::thread thread_;
};

}  // namespace ovss
