// Shared by the CPU kernels (cpu_attention.cc, cpu_matmul.cc).
#ifndef SEEKJAX_MODELS_CPU_KERNELS_H_
#define SEEKJAX_MODELS_CPU_KERNELS_H_

#include <atomic>
#include <cstdint>
#include <thread>

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

}  // namespace seekjax

#endif  // SEEKJAX_MODELS_CPU_KERNELS_H_
