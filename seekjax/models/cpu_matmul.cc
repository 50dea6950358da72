// The decode step's thin matmuls for XLA:CPU, called through the XLA FFI.
//
//   x    f32[M, K]          activations: one token per batch row, so M is a few rows
//   w    f32[P, K, 16]      a [K, N] weight packed into P = N / 16 column panels
//                           (`cpu_matmul.pack`), so that each panel is one contiguous stream
//   out  f32[M, P * 16]     x @ w
//
// XLA:CPU runs the decode step's [16, 576] x [576, N] dots at about a third of the box's
// streaming rate (BENCHMARKS.md, "The decode step's thin matmuls"). Here a work item is two
// panels: each is read once per 8 rows of x, from memory the first time and from cache
// after, with the 8 x 2 partial sums in registers and the next slots prefetched.
//
// With AVX-512 each term is one fused multiply-add; elsewhere a portable loop multiplies,
// then adds (`SeekjaxMatmulFast` says which; SEEKJAX_CPU_MATMUL_PORTABLE=1 asks for the
// latter). Either way each output is the sum over k in order, so a given machine always
// gives the same bits.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#define SEEKJAX_X86 1
#endif

#include "xla/ffi/api/ffi.h"

#include "cpu_kernels.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kPanel = 16;   // columns per panel (one AVX-512 register)
constexpr int64_t kPanels = 2;   // panels per work item
constexpr int kRows = 8;         // rows of x per register block
constexpr int64_t kAhead = 32;   // slots prefetched ahead

// SEEKJAX_CPU_MATMUL_PORTABLE=1 (read when the library loads) forces the portable loop.
bool portable_asked() {
  const char* v = std::getenv("SEEKJAX_CPU_MATMUL_PORTABLE");
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}

#ifdef SEEKJAX_X86
const bool kAvx512 = __builtin_cpu_supports("avx512f") && !portable_asked();
#else
const bool kAvx512 = false;
#endif

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
  if (kAvx512) return block_avx512<R>(xt, w, out, m, k_dim, n, r0, p0);
#endif
  block_portable<R>(xt, w, out, m, k_dim, n, r0, p0);
}

// Every row of out for panels [p0, p0 + kPanels): blocks of kRows rows, then 4, 2, 1.
void item(const float* xt, const float* w, float* out, int64_t m, int64_t k_dim, int64_t n,
          int64_t p0) {
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

// 1 when the matmul runs its AVX-512 form here, 0 for the portable loop.
extern "C" int SeekjaxMatmulFast() { return kAvx512 ? 1 : 0; }
