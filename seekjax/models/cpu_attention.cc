// Cached grouped-query attention for XLA:CPU, called through the XLA FFI.
//
// Reads each row's live slots of the KV cache in place, in order: XLA's own form slices a
// window out of the cache and runs two batched dots of a few rows each, at a fraction of
// the box's memory bandwidth (BENCHMARKS.md, "The decode step's cached attention").
//
//   q    f32[B, T, H, D]    queries (RoPE applied)
//   k, v f32[B, S, K, D]    one layer's cache
//   pos  s32[B, T]          each query attends to slots 0..pos (clamped to S - 1)
//   out  f32[B, T, H * D]
//
// The arithmetic order is fixed (16 partial sums per dot reduced as a tree, no FMA
// contraction: built with -ffp-contract=off), so the result does not depend on the
// instruction set the compiler vectorises for (exp is libm's). A query whose position is
// negative attends to nothing and gets zeros.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"

#include "cpu_kernels.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;

struct Shape {
  int64_t b, t, h, d, s, kv;
};

// q . k over d (a multiple of 16) in 16 lane sums, reduced as a fixed tree.
inline float dot(const float* q, const float* k, int64_t d) {
  float acc[kLanes] = {0};
  for (int64_t i = 0; i < d; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += q[i + l] * k[i + l];
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  return acc[0];
}

// Attention of every head of one (row, query) item. Slots are read in order, each slot's
// keys (then values) of all kv heads together: one contiguous stream through the cache.
void attend_item(const float* q, const float* k, const float* v, const int32_t* pos,
                 float* out, const Shape& sh, int64_t bt, float scale,
                 std::vector<float>& scores) {
  const int64_t g_heads = sh.h / sh.kv;
  const int64_t row = bt / sh.t;
  const int64_t n = std::min<int64_t>(static_cast<int64_t>(pos[bt]) + 1, sh.s);
  const int64_t d = sh.d;
  const float* qb = q + bt * sh.h * d;
  float* ob = out + bt * sh.h * d;
  std::fill(ob, ob + sh.h * d, 0.0f);
  if (n <= 0) return;
  scores.resize(static_cast<size_t>(sh.h * n));
  const int64_t stride = sh.kv * d;
  const float* kr = k + row * sh.s * stride;
  const float* vr = v + row * sh.s * stride;

  for (int64_t j = 0; j < n; ++j) {
    const float* kj = kr + j * stride;
    for (int64_t h = 0; h < sh.h; ++h)
      scores[h * n + j] = dot(qb + h * d, kj + (h / g_heads) * d, d) * scale;
  }
  for (int64_t h = 0; h < sh.h; ++h) {
    float* sg = scores.data() + h * n;
    float m = sg[0];
    for (int64_t j = 1; j < n; ++j) m = std::max(m, sg[j]);
    float total = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      sg[j] = std::exp(sg[j] - m);
      total += sg[j];
    }
    const float inv = 1.0f / total;
    for (int64_t j = 0; j < n; ++j) sg[j] *= inv;
  }
  for (int64_t j = 0; j < n; ++j) {
    const float* vj = vr + j * stride;
    for (int64_t h = 0; h < sh.h; ++h) {
      const float p = scores[h * n + j];
      const float* vh = vj + (h / g_heads) * d;
      float* oh = ob + h * d;
      for (int64_t i = 0; i < d; ++i) oh[i] += p * vh[i];
    }
  }
}

ffi::Error CachedAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                           ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                           ffi::Buffer<ffi::S32> pos, ffi::ResultBuffer<ffi::F32> out) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions(), pd = pos.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4 || pd.size() != 2 ||
      !std::equal(kd.begin(), kd.end(), vd.begin()))
    return ffi::Error::InvalidArgument("cached_attention: q [B,T,H,D], k=v [B,S,K,D], pos [B,T]");
  Shape sh{qd[0], qd[1], qd[2], qd[3], kd[1], kd[2]};
  if (kd[0] != sh.b || kd[3] != sh.d || pd[0] != sh.b || pd[1] != sh.t ||
      sh.h % sh.kv != 0 || sh.d % kLanes != 0)
    return ffi::Error::InvalidArgument("cached_attention: shapes do not agree");
  const float scale = 1.0f / std::sqrt(static_cast<float>(sh.d));
  // One item per (row, query); the rows' items spread over XLA's intra-op threads.
  seekjax::parallel_for(pool, sh.b * sh.t, [&](int64_t start, int64_t end) {
    std::vector<float> scores;
    for (int64_t i = start; i < end; ++i)
      attend_item(q.typed_data(), k.typed_data(), v.typed_data(), pos.typed_data(),
                  out->typed_data(), sh, i, scale, scores);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeekjaxCachedAttention, CachedAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
