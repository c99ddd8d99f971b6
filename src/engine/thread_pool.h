// A fixed pool of worker threads for the engine's data-parallel loops.
//
// parallel_for splits [0, n) into chunks that the threads (the caller is
// thread 0) take in turn, and returns when all are done. Workers spin briefly between
// loops, then sleep on a futex (std::atomic::wait), so that the hundreds of
// small loops of a decode step cost microseconds, not milliseconds.
//
// Results never depend on the number of threads: callers give each index a
// fixed piece of work whose arithmetic does not depend on who runs it.
//
// Thread-safety: one parallel_for at a time, from the owning thread; loop
// bodies must not throw and must not call parallel_for (CHECKed).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace idlefleet::engine {

inline constexpr int kThreadsMax = 256;

class ThreadPool {
 public:
  // REQUIRES: 1 <= threads <= kThreadsMax. threads counts the caller.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end, thread) on disjoint ranges covering [0, n).
  using RangeFn = std::function<void(int64_t begin, int64_t end, int thread)>;
  void parallel_for(int64_t n, const RangeFn& fn);

 private:
  void worker_main(int thread);
  void run_range(int thread);

  std::vector<std::thread> workers_;
  const RangeFn* fn_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

// Threads to use by default: the machine's hardware threads.
int default_thread_count();

}  // namespace idlefleet::engine
