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
// Two forms. A single query per row (T = 1, the decode step) streams each row's live slots
// once: 16 partial sums per dot reduced as a tree, libm's exp. Several queries per row (a
// prompt's prefill, a feedback append) go in blocks: a work item is one row's kv head over
// up to 16 of its queries (all their query heads), so each tile of 16 key slots is
// transposed once and scored against every query of the block, 16 slots at a time, and
// exp is the polynomial `exp_nonpositive`; it replaces XLA's form, which switches between
// attention windows in every layer (8 branches of a layer's attention to compile, keep
// and load back for every prefill and append program).
//
// The arithmetic order is fixed (the multi-query form sums over head_dim and over slots in
// order; no FMA contraction: built with -ffp-contract=off), so the result does not depend
// on the instruction set the compiler vectorises for: the multi-query form is compiled for
// AVX-512, AVX2 and the baseline (`target_clones`) and gives the same bits on each. A
// query whose position is negative attends to nothing and gets zeros.

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

constexpr int64_t kTile = 16;         // key slots scored at once: one vector of 16 floats
constexpr int64_t kQueryBlock = 16;   // queries of one row per multi-query work item

// 16 floats (16 int32s), operated on lane by lane: GCC lowers them to one AVX-512 register,
// two AVX2 ones or four SSE ones, with the same bits in every lane.
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));   // unaligned

inline v16 load(const float* p) { return *reinterpret_cast<const v16u*>(p); }
inline void store(float* p, v16 x) { *reinterpret_cast<v16u*>(p) = x; }
inline v16 splat(float x) { return v16{} + x; }

// The 16 lanes' sum as a fixed tree (halves, then quarters, ...).
inline float lane_sum(v16 x) {
  float a[kTile];
  store(a, x);
  for (int w = kTile / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) a[l] += a[l + w];
  return a[0];
}

// e^x for x <= 0 (a softmax's shifted scores), 0 below -87: Cephes' expf (range reduction
// by ln 2 in two parts, a degree-5 polynomial, the exponent set by bits), lane by lane.
inline v16 exp_nonpositive(v16 x) {
  const v16 xc = x < splat(-87.0f) ? splat(-87.0f) : x;
  const v16 z = xc * splat(1.44269504088896341f) + splat(0.5f);
  v16 n = __builtin_convertvector(__builtin_convertvector(z, v16i), v16);   // toward zero
  n = n > z ? n - splat(1.0f) : n;                                           // floor
  v16 r = xc - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  v16 y = splat(1.9875691500e-4f);
  y = y * r + splat(1.3981999507e-3f);
  y = y * r + splat(8.3334519073e-3f);
  y = y * r + splat(4.1665795894e-2f);
  y = y * r + splat(1.6666665459e-1f);
  y = y * r + splat(5.0000001201e-1f);
  y = y * (r * r) + r + splat(1.0f);
  const v16i bits = (__builtin_convertvector(n, v16i) + 127) << 23;
  const v16 scale = reinterpret_cast<const v16&>(bits);
  return x < splat(-87.0f) ? splat(0.0f) : y * scale;
}

// Scratch of one thread for `attend_block`.
struct BlockScratch {
  std::vector<float> q;        // [nq, d] the block's query vectors
  std::vector<float> kt;       // [d, kTile] a tile of keys, transposed
  std::vector<float> scores;   // [nq, ns] scores, then exps
};

// One multi-query work item: row `row`, kv head `kh`, queries [t0, t1) with their g query
// heads each (nq = (t1 - t0) * g query vectors). Scores go 16 slots at a time, each a sum
// over d in order; each query's softmax covers its own slots 0..pos (lane sums of the
// exps reduced by `lane_sum`); then the weighted sum of values over those slots in order.
__attribute__((target_clones("avx512f", "avx2", "default")))
void attend_block(const float* q, const float* k, const float* v, const int32_t* pos,
                  float* out, const Shape& sh, int64_t row, int64_t kh, int64_t t0,
                  int64_t t1, float scale, BlockScratch& scratch) {
  const int64_t g = sh.h / sh.kv, d = sh.d, stride = sh.kv * d;
  const int64_t nq = (t1 - t0) * g;
  int64_t n_max = 0;
  for (int64_t t = t0; t < t1; ++t)
    n_max = std::max<int64_t>(n_max, std::min<int64_t>(pos[row * sh.t + t] + 1, sh.s));
  // the block's query vectors, contiguous: vector i is query t0 + i / g, head kh * g + i % g
  scratch.q.resize(static_cast<size_t>(nq * d));
  for (int64_t i = 0; i < nq; ++i) {
    const float* src = q + ((row * sh.t + t0 + i / g) * sh.h + kh * g + i % g) * d;
    std::copy(src, src + d, scratch.q.data() + i * d);
  }
  const int64_t ns = (n_max + kTile - 1) / kTile * kTile;
  scratch.kt.resize(static_cast<size_t>(d * kTile));
  scratch.scores.resize(static_cast<size_t>(std::max<int64_t>(nq * ns, 1)));
  float* kt = scratch.kt.data();
  float* scores = scratch.scores.data();
  const float* kr = k + row * sh.s * stride + kh * d;
  const float* vr = v + row * sh.s * stride + kh * d;
  const v16 vscale = splat(scale);

  for (int64_t j0 = 0; j0 < n_max; j0 += kTile) {
    const int64_t jn = std::min<int64_t>(kTile, n_max - j0);
    for (int64_t jj = 0; jj < kTile; ++jj)
      for (int64_t c = 0; c < d; ++c)
        kt[c * kTile + jj] = jj < jn ? kr[(j0 + jj) * stride + c] : 0.0f;
    int64_t i = 0;
    for (; i + 4 <= nq; i += 4) {   // four queries share each row of the tile
      const float* qi = scratch.q.data() + i * d;
      v16 a0{}, a1{}, a2{}, a3{};
      for (int64_t c = 0; c < d; ++c) {
        const v16 kc = load(kt + c * kTile);
        a0 += qi[c] * kc;
        a1 += qi[d + c] * kc;
        a2 += qi[2 * d + c] * kc;
        a3 += qi[3 * d + c] * kc;
      }
      store(scores + i * ns + j0, a0 * vscale);
      store(scores + (i + 1) * ns + j0, a1 * vscale);
      store(scores + (i + 2) * ns + j0, a2 * vscale);
      store(scores + (i + 3) * ns + j0, a3 * vscale);
    }
    for (; i < nq; ++i) {
      const float* qi = scratch.q.data() + i * d;
      v16 a{};
      for (int64_t c = 0; c < d; ++c) a += qi[c] * load(kt + c * kTile);
      store(scores + i * ns + j0, a * vscale);
    }
  }
  const v16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t t = t0 + i / g;
    const int64_t n = std::min<int64_t>(pos[row * sh.t + t] + 1, sh.s);
    float* oi = out + ((row * sh.t + t) * sh.h + kh * g + i % g) * d;
    std::fill(oi, oi + d, 0.0f);
    if (n <= 0) continue;
    float* si = scores + i * ns;
    const int64_t tiles = (n + kTile - 1) / kTile;
    // slots past this query's position: scored -1e30, so that their exp is 0
    const v16 last = load(si + (tiles - 1) * kTile);
    store(si + (tiles - 1) * kTile,
          lane < splat(static_cast<float>(n - (tiles - 1) * kTile)) ? last : splat(-1e30f));
    v16 mv = load(si);
    for (int64_t j = 1; j < tiles; ++j) {
      const v16 x = load(si + j * kTile);
      mv = x > mv ? x : mv;
    }
    float m = mv[0];
    for (int l = 1; l < kTile; ++l) m = std::max(m, mv[l]);
    v16 sum{};
    for (int64_t j = 0; j < tiles; ++j) {
      const v16 e = exp_nonpositive(load(si + j * kTile) - splat(m));
      store(si + j * kTile, e);
      sum += e;
    }
    const float inv = 1.0f / lane_sum(sum);
    for (int64_t c0 = 0; c0 < d; c0 += kTile) {
      v16 o{};
      for (int64_t j = 0; j < n; ++j) o += (si[j] * inv) * load(vr + j * stride + c0);
      store(oi + c0, o);
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
  if (sh.t > 1) {
    // One item per (row, kv head, block of queries), spread over XLA's intra-op threads.
    const int64_t blocks = (sh.t + kQueryBlock - 1) / kQueryBlock;
    seekjax::parallel_for(pool, sh.b * sh.kv * blocks, [&](int64_t start, int64_t end) {
      BlockScratch scratch;
      for (int64_t i = start; i < end; ++i) {
        const int64_t blk = i % blocks, kh = (i / blocks) % sh.kv, row = i / blocks / sh.kv;
        attend_block(q.typed_data(), k.typed_data(), v.typed_data(), pos.typed_data(),
                     out->typed_data(), sh, row, kh, blk * kQueryBlock,
                     std::min<int64_t>((blk + 1) * kQueryBlock, sh.t), scale, scratch);
      }
    });
    return ffi::Error::Success();
  }
  // One item per row (a single query each); the rows spread over XLA's intra-op threads.
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
