// Runs independent work items on a few short-lived std::threads. No pool and
// no OpenMP: Paddle brings its own OpenMP runtime and a second one in the same
// process fights it for cores.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace posepipe {

inline int resolve_threads(int requested, int64_t items) {
  int n = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
  if (n < 1) n = 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n, items)));
}

// Calls fn(i) for every i in [0, items). Items are handed out one at a time so
// that uneven items (big and small images) still balance.
template <class Fn>
void parallel_for(int64_t items, int num_threads, Fn&& fn) {
  if (items <= 0) return;
  const int threads = resolve_threads(num_threads, items);
  if (threads == 1) {
    for (int64_t i = 0; i < items; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&]() {
    try {
      for (int64_t i = next++; i < items; i = next++) fn(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = items;  // the others stop at their next item
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace posepipe
