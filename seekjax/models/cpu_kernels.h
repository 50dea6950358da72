// Shared by the CPU kernels (cpu_attention.cc, cpu_matmul.cc).
#ifndef SEEKJAX_MODELS_CPU_KERNELS_H_
#define SEEKJAX_MODELS_CPU_KERNELS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace seekjax {

// Waits until `done` reaches `items` (the work items a call's helpers claimed). It spins
// rather than yields: a yield hands the core to whatever else is runnable for a whole time
// slice, and under a niced busy loop on the 2-core box that halved `generate`'s speed.
inline void wait_for_items(const std::atomic<int64_t>& done, int64_t items) {
  while (done.load(std::memory_order_acquire) < items) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }
}

// Runs fn(start, end) over items [0, items), in chunks claimed from a shared counter by the
// calling thread and by helpers scheduled on XLA's intra-op pool; returns once every item is
// done. A helper only touches fn after claiming a chunk, while the caller still waits, so fn
// may capture the caller's locals; one that starts late finds nothing left and only drops
// its reference to the counters.
template <typename Fn>
void parallel_for(xla::ffi::ThreadPool& pool, int64_t items, Fn fn) {
  struct Counters {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto counters = std::make_shared<Counters>();
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t chunk = std::max<int64_t>(1, items / (4 * threads));
  auto run = [counters, items, chunk, f = &fn] {
    for (;;) {
      const int64_t start = counters->next.fetch_add(chunk);
      if (start >= items) return;
      const int64_t end = std::min(start + chunk, items);
      (*f)(start, end);
      counters->done.fetch_add(end - start, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(threads, items / chunk) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([run] { run(); });
  run();
  wait_for_items(counters->done, items);
}

}  // namespace seekjax

#endif  // SEEKJAX_MODELS_CPU_KERNELS_H_
