#include "engine/thread_pool.h"

#include <immintrin.h>

#include <algorithm>

#include "common/check.h"

namespace idlefleet::engine {

namespace {
// Spin iterations before a waiting thread sleeps on a futex: tens of
// microseconds (pause is 40-140 cycles depending on the CPU), enough to cover
// the gap between a decode step's loops without burning for long a core that
// an oversubscribed machine needs for the workers.
constexpr int kSpinIterationsMax = 2000;

// Set on pool threads: a parallel_for from inside a loop body would corrupt
// the pool's state, so it is refused.
thread_local bool t_inside_pool = false;
}  // namespace

ThreadPool::ThreadPool(int threads) {
  CHECK(threads >= 1 && threads <= kThreadsMax);
  workers_.reserve(static_cast<size_t>(threads - 1));
  for (int t = 1; t < threads; ++t) workers_.emplace_back([this, t] { worker_main(t); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::run_range(int thread) {
  // Threads take chunks from a shared counter, so that a thread slowed down
  // (by the OS, or by its share of memory bandwidth) does not hold the others
  // up. Which thread computes an index never changes its result.
  // Guided self-scheduling: each take is half of an even share of what is
  // left (at least one index), so chunks start large (few atomic operations)
  // and shrink towards the end (the last thread finishes soon after the others).
  const int64_t threads = size();
  int64_t begin = next_.load(std::memory_order_relaxed);
  for (;;) {
    if (begin >= n_) return;
    const int64_t take = std::max<int64_t>(1, (n_ - begin) / (2 * threads));
    if (next_.compare_exchange_weak(begin, begin + take, std::memory_order_relaxed)) {
      (*fn_)(begin, std::min(n_, begin + take), thread);
      begin = next_.load(std::memory_order_relaxed);
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const RangeFn& fn) {
  CHECK(!t_inside_pool);  // REQUIRES: not called from inside a loop body
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {
    fn(0, n, 0);
    return;
  }
  t_inside_pool = true;
  fn_ = &fn;
  n_ = n;
  next_.store(0, std::memory_order_relaxed);
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  run_range(0);
  int spins = 0;
  for (int left; (left = pending_.load(std::memory_order_acquire)) != 0;) {
    if (++spins < kSpinIterationsMax) {
      _mm_pause();
    } else {
      pending_.wait(left, std::memory_order_acquire);
    }
  }
  fn_ = nullptr;
  t_inside_pool = false;
}

void ThreadPool::worker_main(int thread) {
  t_inside_pool = true;
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    uint64_t g;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) {
      if (++spins < kSpinIterationsMax) {
        _mm_pause();
      } else {
        generation_.wait(seen, std::memory_order_acquire);
      }
    }
    seen = g;
    if (stop_.load()) return;
    run_range(thread);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

int default_thread_count() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n > kThreadsMax ? kThreadsMax : n);
}

}  // namespace idlefleet::engine
