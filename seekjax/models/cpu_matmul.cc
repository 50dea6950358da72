// The decode step's thin matmuls for XLA:CPU, called through the XLA FFI.
//
//   x    f32[M, K]          activations: one token per batch row, so M is a few rows
//   w    f32[P, K, 16]      a [K, N] weight packed into P = N / 16 column panels
//                           (`cpu_matmul.pack`), so that each panel is one contiguous stream
//   out  f32[M, P * 16]     x @ w
//
// XLA:CPU runs the decode step's [16, 576] x [576, N] dots at about a third of the box's
// streaming rate (BENCHMARKS.md, "The decode step's thin matmuls"). Here a work item is two
// panels: each is read from memory once and from cache for the next block of rows, with a
// block's partial sums in registers and the next slots prefetched.
//
// Three forms, the best the CPU has (`SeekjaxMatmulIsa` says which):
//   2  AVX-512: blocks of 8 rows x both panels (16 zmm accumulators);
//   1  AVX2 + FMA: blocks of 6 rows x one panel (12 ymm accumulators, 2 for the panel's
//      slot, 1 for the broadcast: the 16 ymm registers);
//   0  a portable loop that multiplies, then adds.
// SEEKJAX_CPU_MATMUL_ISA=avx2|portable (read when the library loads) asks for a lower one.
// The two vector forms compute each output as the same chain of fused multiply-adds over k
// in order, so they give the same bits; the portable loop rounds each product first.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define SEEKJAX_X86 1
#endif

#include "xla/ffi/api/ffi.h"

#include "cpu_kernels.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kPanel = 16;   // columns per panel (one AVX-512 register, two AVX2 ones)
constexpr int64_t kPanels = 2;   // panels per work item
constexpr int kRows = 8;         // rows of x per register block (AVX-512)
constexpr int kRowsAvx2 = 6;     // rows of x per register block (AVX2)
constexpr int64_t kAhead = 32;   // slots prefetched ahead

enum Isa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The highest form this CPU runs, capped by SEEKJAX_CPU_MATMUL_ISA.
Isa detect_isa() {
  int best = kPortable;
#ifdef SEEKJAX_X86
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = kAvx2;
  if (__builtin_cpu_supports("avx512f")) best = kAvx512;
#endif
  const char* v = std::getenv("SEEKJAX_CPU_MATMUL_ISA");
  if (v != nullptr && std::strcmp(v, "portable") == 0) best = kPortable;
  if (v != nullptr && std::strcmp(v, "avx2") == 0) best = std::min<int>(best, kAvx2);
  return static_cast<Isa>(best);
}

const Isa kIsa = detect_isa();

#ifdef SEEKJAX_X86
// Rows [r0, r0 + R) of out, panels [p0, p0 + kPanels): xt is x transposed, [K, M].
template <int R>
__attribute__((target("avx512f"))) void block_avx512(const float* xt, const float* w,
                                                     float* out, int64_t m, int64_t k_dim,
                                                     int64_t n, int64_t r0, int64_t p0) {
  __m512 acc[R][kPanels];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < kPanels; ++q) acc[r][q] = _mm512_setzero_ps();
  const float* wp = w + p0 * k_dim * kPanel;
  for (int64_t k = 0; k < k_dim; ++k) {
    __m512 wk[kPanels];
    for (int q = 0; q < kPanels; ++q) {
      const float* slot = wp + (q * k_dim + k) * kPanel;
      _mm_prefetch(reinterpret_cast<const char*>(slot + kAhead * kPanel), _MM_HINT_T0);
      wk[q] = _mm512_loadu_ps(slot);
    }
    const float* xk = xt + k * m + r0;
    for (int r = 0; r < R; ++r) {
      const __m512 xb = _mm512_set1_ps(xk[r]);
      for (int q = 0; q < kPanels; ++q) acc[r][q] = _mm512_fmadd_ps(xb, wk[q], acc[r][q]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < kPanels; ++q)
      _mm512_storeu_ps(out + (r0 + r) * n + (p0 + q) * kPanel, acc[r][q]);
}

// AVX2 + FMA: rows [r0, r0 + R) of out (R <= 6), panel p alone (its two halves in two
// registers), prefetching `ahead` floats past each slot it reads. The accumulators are
// named, not an array: GCC 12 stores an array of __m256 back to the stack at every k.
template <int R>
__attribute__((target("avx2,fma"))) void block_avx2(const float* xt, const float* w,
                                                    float* out, int64_t m, int64_t k_dim,
                                                    int64_t n, int64_t r0, int64_t p,
                                                    int64_t ahead) {
  static_assert(R >= 1 && R <= kRowsAvx2, "block_avx2 holds at most 6 rows");
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
         a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  const float* wp = w + p * k_dim * kPanel;
  for (int64_t k = 0; k < k_dim; ++k) {
    const float* slot = wp + k * kPanel;
    _mm_prefetch(reinterpret_cast<const char*>(slot + ahead), _MM_HINT_T0);
    const __m256 w0 = _mm256_loadu_ps(slot), w1 = _mm256_loadu_ps(slot + 8);
    const float* xk = xt + k * m + r0;
#define SEEKJAX_ROW(i, lo, hi)                                                  \
    if (R > i) {                                                                \
      const __m256 xb = _mm256_broadcast_ss(xk + i);                            \
      lo = _mm256_fmadd_ps(xb, w0, lo);                                         \
      hi = _mm256_fmadd_ps(xb, w1, hi);                                         \
    }
    SEEKJAX_ROW(0, a0, a1) SEEKJAX_ROW(1, a2, a3) SEEKJAX_ROW(2, a4, a5)
    SEEKJAX_ROW(3, a6, a7) SEEKJAX_ROW(4, a8, a9) SEEKJAX_ROW(5, a10, a11)
#undef SEEKJAX_ROW
  }
  float* o = out + r0 * n + p * kPanel;
#define SEEKJAX_STORE(i, lo, hi)                                                \
  if (R > i) {                                                                  \
    _mm256_storeu_ps(o + i * n, lo);                                            \
    _mm256_storeu_ps(o + i * n + 8, hi);                                        \
  }
  SEEKJAX_STORE(0, a0, a1) SEEKJAX_STORE(1, a2, a3) SEEKJAX_STORE(2, a4, a5)
  SEEKJAX_STORE(3, a6, a7) SEEKJAX_STORE(4, a8, a9) SEEKJAX_STORE(5, a10, a11)
#undef SEEKJAX_STORE
}

// Every row of out for panels [p0, p0 + kPanels), one panel at a time: blocks of
// kRowsAvx2 rows, then 4, 2, 1. The first block streams the panel from memory (prefetching
// a few slots ahead); later blocks find it in cache and prefetch the next panel instead,
// so that its first block computes rather than waits.
void item_avx2(const float* xt, const float* w, float* out, int64_t m, int64_t k_dim,
               int64_t n, int64_t p0) {
  for (int64_t p = p0; p < p0 + kPanels; ++p) {
    int64_t r = 0, ahead = kAhead * kPanel;
    auto next = [&](int rows) { r += rows; ahead = k_dim * kPanel; };
    for (; r + kRowsAvx2 <= m; next(kRowsAvx2))
      block_avx2<kRowsAvx2>(xt, w, out, m, k_dim, n, r, p, ahead);
    if (r + 4 <= m) { block_avx2<4>(xt, w, out, m, k_dim, n, r, p, ahead); next(4); }
    if (r + 2 <= m) { block_avx2<2>(xt, w, out, m, k_dim, n, r, p, ahead); next(2); }
    if (r < m) block_avx2<1>(xt, w, out, m, k_dim, n, r, p, ahead);
  }
}
#endif

template <int R>
void block_portable(const float* xt, const float* w, float* out, int64_t m, int64_t k_dim,
                    int64_t n, int64_t r0, int64_t p0) {
  float acc[R][kPanels * kPanel] = {};
  const float* wp = w + p0 * k_dim * kPanel;
  for (int64_t k = 0; k < k_dim; ++k) {
    const float* xk = xt + k * m + r0;
    for (int q = 0; q < kPanels; ++q) {
      const float* slot = wp + (q * k_dim + k) * kPanel;
      for (int r = 0; r < R; ++r)
        for (int64_t j = 0; j < kPanel; ++j) acc[r][q * kPanel + j] += xk[r] * slot[j];
    }
  }
  for (int r = 0; r < R; ++r)
    std::copy(acc[r], acc[r] + kPanels * kPanel, out + (r0 + r) * n + p0 * kPanel);
}

template <int R>
void block(const float* xt, const float* w, float* out, int64_t m, int64_t k_dim, int64_t n,
           int64_t r0, int64_t p0) {
#ifdef SEEKJAX_X86
  if (kIsa == kAvx512) return block_avx512<R>(xt, w, out, m, k_dim, n, r0, p0);
#endif
  block_portable<R>(xt, w, out, m, k_dim, n, r0, p0);
}

// Every row of out for panels [p0, p0 + kPanels): blocks of kRows rows, then 4, 2, 1
// (AVX-512 and portable; AVX2 has its own order, `item_avx2`).
void item(const float* xt, const float* w, float* out, int64_t m, int64_t k_dim, int64_t n,
          int64_t p0) {
#ifdef SEEKJAX_X86
  if (kIsa == kAvx2) return item_avx2(xt, w, out, m, k_dim, n, p0);
#endif
  int64_t r = 0;
  for (; r + kRows <= m; r += kRows) block<kRows>(xt, w, out, m, k_dim, n, r, p0);
  if (r + 4 <= m) { block<4>(xt, w, out, m, k_dim, n, r, p0); r += 4; }
  if (r + 2 <= m) { block<2>(xt, w, out, m, k_dim, n, r, p0); r += 2; }
  if (r < m) block<1>(xt, w, out, m, k_dim, n, r, p0);
}

ffi::Error PackedMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                        ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> out) {
  auto xd = x.dimensions(), wd = w.dimensions(), od = out->dimensions();
  if (xd.size() != 2 || wd.size() != 3 || od.size() != 2 || wd[2] != kPanel)
    return ffi::Error::InvalidArgument("packed_matmul: x [M, K], w [P, K, 16], out [M, 16 P]");
  const int64_t m = xd[0], k_dim = xd[1], panels = wd[0], n = panels * kPanel;
  if (wd[1] != k_dim || od[0] != m || od[1] != n || panels % kPanels != 0)
    return ffi::Error::InvalidArgument("packed_matmul: shapes do not agree (or N % 32 != 0)");
  if (m == 0) return ffi::Error::Success();
  // x transposed, [K, M]: the kernel broadcasts x[r, k] for consecutive rows r.
  std::vector<float> xt(static_cast<size_t>(m * k_dim));
  const float* xp = x.typed_data();
  for (int64_t r = 0; r < m; ++r)
    for (int64_t k = 0; k < k_dim; ++k) xt[k * m + r] = xp[r * k_dim + k];
  // Work items are pairs of panels, spread over XLA's intra-op threads.
  seekjax::parallel_for(pool, panels / kPanels, [&](int64_t start, int64_t end) {
    for (int64_t i = start; i < end; ++i)
      item(xt.data(), w.typed_data(), out->typed_data(), m, k_dim, n, i * kPanels);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeekjaxPackedMatmul, PackedMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// The form the matmul runs here: 2 AVX-512, 1 AVX2 + FMA, 0 the portable loop.
extern "C" int SeekjaxMatmulIsa() { return static_cast<int>(kIsa); }
