// Exact softmax attention where every query row sees one contiguous range of key rows.
//
// Every mask of docs/spec.md on the interleaved sequence is of this form: query row i (of Lq,
// bottom-right aligned to Lk keys, D = Lk - Lq) sees the key rows [lo(i), hi(i)], minus padded
// keys. flat: [D+i - W*P + 1, D+i]; token: the tokens [t - W + 1, t] of the query's token
// t = (D+i) / P, all P pseudo keys each; no window: lo = 0. Both bounds grow with i, so a block
// of query rows [i0, i1) needs only the keys [lo(i0), hi(i1-1)]: one small dense problem whose
// scores fit in cache. A block's softmax is exact in one pass (no running max, no merges), and
// its matrix products go to the BLAS that torch links (sgemm_/dgemm_), except on the fused
// sliding-window path, whose products run on the tiles below (panel_scores, band_product,
// band_add_rows) and skip the block's masked triangles. Work per head is
// Lq * (W*P + block) scores: the cost of the band's FLOPs plus a block-sized edge.
//
// Parallel over (batch, head, block) forward (in task_order) and (batch, query head) backward
// with ATen's thread pool (torch.set_num_threads); every task writes its own rows, so no atomics.
// GQA: k, v have G heads; query head h reads kv head h / (H/G). Key/value gradients are
// returned per query head, (B, H, Lk, d), and summed over the group by the caller.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <list>
#include <mutex>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b,
            const int* ldb, const double* beta, double* c, const int* ldc);
}

namespace {

enum MaskMode : int64_t { kFlat = 0, kToken = 1, kNone = 2 };

// Row-major C (M x N) = alpha * op(A) (M x K) * op(B) (K x N) + beta * C. A row-major matrix is
// its column-major transpose, so this is the column-major C^T = op(B)^T op(A)^T.
inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  sgemm_(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double* A,
                 int lda, const double* B, int ldb, double beta, double* C, int ldc) {
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  dgemm_(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}


// Outputs of at least kPoolMinBytes come from a pool of freed buffers. On the interleaved
// sequence IHA's tensors are P times MHA's (16 MiB each at N=2048, P=4, H=8, d=64); glibc
// serves blocks that large with fresh mmap pages and unmaps them when freed, so every step paid
// a page fault (and the kernel's zero-filling) per 4 KiB of each: 7,000-14,000 faults and
// 20-30 ms of a 230 ms window-core step (docs/benchmarks.md). A freed output's buffer goes back
// to the pool and serves the next request of its exact size, the way PyTorch's CUDA caching
// allocator keeps device memory; beyond the pool's limit (pool_limit, bytes) the least recently
// freed buffers are freed for good. Only this library's outputs are pooled; nothing else in the
// process changes. A pooled tensor's storage cannot be resized in place (resize_ larger raises).
constexpr int64_t kPoolMinBytes = int64_t(1) << 20;

class Pool {
 public:
  static Pool& get() {  // never destroyed: a tensor may be freed during interpreter shutdown
    static Pool* pool = new Pool();
    return *pool;
  }

  at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    int64_t numel = 1;
    for (const int64_t n : sizes) numel *= n;
    const int64_t nbytes = numel * static_cast<int64_t>(options.dtype().itemsize());
    if (nbytes < kPoolMinBytes || limit() == 0) return at::empty(sizes, options);
    void* data = take(nbytes);
    if (data == nullptr) {
      if (posix_memalign(&data, 64, static_cast<size_t>(nbytes)) != 0) data = nullptr;
      TORCH_CHECK(data != nullptr, "band kernel: out of memory allocating ", nbytes, " bytes");
    }
    return at::from_blob(data, sizes, [nbytes](void* ptr) { Pool::get().give(ptr, nbytes); },
                         options);
  }

  int64_t set_limit(int64_t bytes) {
    std::vector<void*> release;
    int64_t old;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      old = limit_;
      limit_ = bytes;
      trim(release);
    }
    for (void* ptr : release) std::free(ptr);
    return old;
  }

  int64_t limit() {
    std::lock_guard<std::mutex> guard(mutex_);
    return limit_;
  }

  int64_t cached() {
    std::lock_guard<std::mutex> guard(mutex_);
    return cached_;
  }

 private:
  struct Entry {
    int64_t nbytes;
    void* ptr;
  };

  // The most recently freed buffer of this size (LRU order: oldest first).
  void* take(int64_t nbytes) {
    std::lock_guard<std::mutex> guard(mutex_);
    for (auto it = free_.rbegin(); it != free_.rend(); ++it) {
      if (it->nbytes == nbytes) {
        void* ptr = it->ptr;
        free_.erase(std::next(it).base());
        cached_ -= nbytes;
        return ptr;
      }
    }
    return nullptr;
  }

  // Keep the buffer, dropping the least recently freed ones beyond the limit (sizes that are
  // no longer asked for age out).
  void give(void* ptr, int64_t nbytes) {
    std::vector<void*> release;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      if (nbytes <= limit_) {
        free_.push_back({nbytes, ptr});
        cached_ += nbytes;
      } else {
        release.push_back(ptr);
      }
      trim(release);
    }
    for (void* p : release) std::free(p);
  }

  // Drop the least recently freed buffers until the cache fits the limit; caller holds mutex_.
  void trim(std::vector<void*>& release) {
    while (cached_ > limit_ && !free_.empty()) {
      cached_ -= free_.front().nbytes;
      release.push_back(free_.front().ptr);
      free_.pop_front();
    }
  }

  std::mutex mutex_;
  std::list<Entry> free_;
  int64_t cached_ = 0;
  int64_t limit_ = int64_t(1) << 30;
};

inline at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return Pool::get().empty(sizes, options);
}

struct Band {
  int64_t mode, P, window, Lq, Lk;

  // First and last key row of query row i (inclusive), clipped to [0, Lk); lo > hi: none.
  inline int64_t lo(int64_t i) const {
    if (window <= 0) return 0;
    const int64_t row = Lk - Lq + i;
    const int64_t first = mode == kFlat ? row - window * P + 1 : (row / P - window + 1) * P;
    return std::max<int64_t>(first, 0);
  }
  inline int64_t hi(int64_t i) const {
    const int64_t row = Lk - Lq + i;
    if (mode == kNone) return Lk - 1;
    const int64_t last = mode == kFlat ? row : (row / P + 1) * P - 1;
    return std::min<int64_t>(last, Lk - 1);
  }
};

// Row maximum, exp(s - shift) in place with its sum, and dot products: the elementwise work of
// the softmax. float32 uses AVX-512 (exp16 below) or AVX2 (SLEEF's 1-ulp exp, exported by
// libtorch_cpu, the same exp as torch.exp); float64 (tests, reference checks) stays scalar.
template <typename scalar_t>
inline scalar_t row_max(const scalar_t* s, int64_t n) {
  scalar_t m = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::max(m, s[j]);
  return m;
}

template <typename scalar_t>
inline scalar_t exp_shifted(scalar_t* s, int64_t n, scalar_t shift) {
  scalar_t sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - shift);
    sum += s[j];
  }
  return sum;
}

template <typename scalar_t>
inline scalar_t row_dot(const scalar_t* x, const scalar_t* y, int64_t n) {
  scalar_t sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += x[j] * y[j];
  return sum;
}

#if defined(__AVX512F__)
template <>
inline float row_max<float>(const float* s, int64_t n) {
  __m512 acc = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) acc = _mm512_max_ps(acc, _mm512_loadu_ps(s + j));
  float m = _mm512_reduce_max_ps(acc);
  for (; j < n; ++j) m = std::max(m, s[j]);
  return m;
}
// e^x of 16 floats, x <= 0 (the softmax's s - max and s - lse). x = n ln2 + r with |r| <= ln2/2
// (ln2 split in two for an exact n ln2), e^r by its Taylor polynomial to degree 7 (truncation
// below 1e-8 relative), times 2^n by scalef. Relative error within 0.65 float32 eps over
// [-87, 0] (SLEEF's u10: 0.52; tests/backends/test_backend_band.py), and about twice its speed:
// 2-3 ms of the window benchmark's 50 ms forward and 110 ms backward (docs/benchmarks.md).
// x = -inf (a padded key) and x < -110 give exactly 0.
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-110.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}
template <>
inline float exp_shifted<float>(float* s, int64_t n, float shift) {
  const __m512 vshift = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + j), vshift));
    _mm512_storeu_ps(s + j, e);
    acc = _mm512_add_ps(acc, e);
  }
  float sum = _mm512_reduce_add_ps(acc);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - shift);
    sum += s[j];
  }
  return sum;
}
template <>
inline float row_dot<float>(const float* x, const float* y, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(x + j), _mm512_loadu_ps(y + j), acc);
  }
  float sum = _mm512_reduce_add_ps(acc);
  for (; j < n; ++j) sum += x[j] * y[j];
  return sum;
}
#elif defined(__AVX2__) && defined(__FMA__)
extern "C" __m256 Sleef_expf8_u10(__m256);
inline float sum8(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}
template <>
inline float row_max<float>(const float* s, int64_t n) {
  __m256 acc = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) acc = _mm256_max_ps(acc, _mm256_loadu_ps(s + j));
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  float m = *std::max_element(lanes, lanes + 8);
  for (; j < n; ++j) m = std::max(m, s[j]);
  return m;
}
template <>
inline float exp_shifted<float>(float* s, int64_t n, float shift) {
  const __m256 vshift = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = Sleef_expf8_u10(_mm256_sub_ps(_mm256_loadu_ps(s + j), vshift));
    _mm256_storeu_ps(s + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = sum8(acc);
  for (; j < n; ++j) {
    s[j] = std::exp(s[j] - shift);
    sum += s[j];
  }
  return sum;
}
template <>
inline float row_dot<float>(const float* x, const float* y, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(y + j), acc);
  }
  float sum = sum8(acc);
  for (; j < n; ++j) sum += x[j] * y[j];
  return sum;
}
#endif

// Scores of rows [i0, i0 + R) against keys [k0, k0 + K) -> softmax weights in place.
// With lse_in == nullptr the row maxima and sums are computed, the LSE written to lse_out, and
// the weights are left unnormalised, exp(s - max), with 1 / sum in inv_out (the caller scales
// the output rows: dv multiplications a row instead of K); otherwise the weights are
// exp(s - lse) with the given (forward) LSE. Keys outside a row's range or padded get weight 0;
// a row without keys gets all-zero weights, LSE -inf and inv 0.
template <typename scalar_t>
void softmax_rows(scalar_t* S, int64_t R, int64_t K, int64_t i0, int64_t k0, const Band& band,
                  const bool* valid, const scalar_t* lse_in, scalar_t* lse_out,
                  scalar_t* inv_out) {
  const scalar_t neg_inf = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t r = 0; r < R; ++r) {
    scalar_t* s = S + r * K;
    const int64_t a = std::min<int64_t>(std::max<int64_t>(band.lo(i0 + r) - k0, 0), K);
    const int64_t b = std::max<int64_t>(std::min<int64_t>(band.hi(i0 + r) - k0 + 1, K), a);
    std::fill(s, s + a, scalar_t(0));
    std::fill(s + b, s + K, scalar_t(0));
    if (valid != nullptr) {
      for (int64_t j = a; j < b; ++j) s[j] = valid[k0 + j] ? s[j] : neg_inf;
    }
    const scalar_t m = lse_in == nullptr ? row_max(s + a, b - a) : lse_in[r];
    if (m == neg_inf) {  // no key: weights 0 (forward output 0, no gradient)
      std::fill(s + a, s + b, scalar_t(0));
      if (lse_out != nullptr) lse_out[r] = neg_inf;
      if (inv_out != nullptr) inv_out[r] = scalar_t(0);
      continue;
    }
    const scalar_t sum = exp_shifted(s + a, b - a, m);
    if (lse_in == nullptr) {
      lse_out[r] = m + std::log(sum);
      inv_out[r] = scalar_t(1) / sum;
    }
  }
}

template <typename scalar_t>
inline void scale_row(scalar_t* __restrict__ y, scalar_t a, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}

// The keys a block of query rows [i0, i0 + R) needs, [k0, k1) (k1 <= k0: none), widened to a
// multiple of 16 keys where the sequence allows: score rows then start 64-byte aligned in an
// aligned buffer (the widened keys are outside every row's range and get weight 0).
inline bool block_keys(const Band& band, int64_t i0, int64_t R, int64_t& k0, int64_t& k1) {
  k0 = band.lo(i0);
  k1 = band.hi(i0 + R - 1) + 1;
  if (k1 <= k0) return false;
  const int64_t width = (k1 - k0 + 15) / 16 * 16;
  if (width <= band.Lk) {
    k0 = std::max<int64_t>(0, k1 - width);
    k1 = k0 + width;
  }
  return true;
}

// The columns [a, b) of keys [K0, K0 + K) that any of the rows [i, i + rb) sees: from the first
// row's first key to the last row's last (both grow with the row), clipped.
inline void group_keys(const Band& band, int64_t i, int64_t rb, int64_t K0, int64_t K,
                       int64_t& a, int64_t& b) {
  a = std::min<int64_t>(std::max<int64_t>(band.lo(i) - K0, 0), K);
  b = std::max<int64_t>(std::min<int64_t>(band.hi(i + rb - 1) - K0 + 1, K), a);
}

// Keys packed for the score products of the window path: panel p holds key rows
// [first + 16p, first + 16p + 16) as a (d, 16) tile (column j: key first + 16p + j; columns past
// the packed keys are 0). The window path packs a chunk's keys once per head (see kChunkBlocks)
// and every block of the chunk reads them; MKL's sgemm packed the same keys again for each of
// them (about 11% of the window step's time in its profile).
template <typename scalar_t>
struct Panels {
  std::vector<scalar_t> data;
  int64_t first = 0, keys = 0, d = 0;

  // n key rows of dim values each, the first being key row first_row.
  void pack(const scalar_t* rows, int64_t first_row, int64_t n, int64_t dim) {
    first = first_row;
    keys = n;
    d = dim;
    const int64_t np = (n + 15) / 16;
    data.resize(np * 16 * dim);
    for (int64_t p = 0; p < np; ++p) {
      scalar_t* tile = data.data() + p * dim * 16;
      for (int64_t j = 0; j < 16; ++j) {
        const int64_t key = p * 16 + j;
        if (key < n) {
          const scalar_t* row = rows + key * dim;
          for (int64_t k = 0; k < dim; ++k) tile[k * 16 + j] = row[k];
        } else {
          for (int64_t k = 0; k < dim; ++k) tile[k * 16 + j] = scalar_t(0);
        }
      }
    }
  }
  const scalar_t* panel(int64_t p) const { return data.data() + p * d * 16; }
};

// Whether the window path packs keys into panels: float32 with AVX-512 (the tile below), and
// float64 (the plain tile: tests check the panel logic against float64 references). float32
// without AVX-512 keeps sgemm.
template <typename scalar_t>
constexpr bool use_panels() {
#if defined(__AVX512F__)
  return true;
#else
  return std::is_same<scalar_t, double>::value;
#endif
}

// s (rb, w) = scale * x (rb, d) . the w <= 32 keys of panel pn and, past 16, the next panel;
// s rows lds apart.
template <typename scalar_t>
inline void score_tile(const scalar_t* x, int64_t d, int64_t rb, const scalar_t* pn, int64_t w,
                       scalar_t scale, scalar_t* s, int64_t lds) {
  for (int64_t r = 0; r < rb; ++r) {
    for (int64_t j = 0; j < w; ++j) {
      const scalar_t* col = pn + (j / 16) * d * 16 + j % 16;
      scalar_t acc = 0;
      for (int64_t k = 0; k < d; ++k) acc += x[r * d + k] * col[k * 16];
      s[r * lds + j] = scale * acc;
    }
  }
}

#if defined(__AVX512F__)
// RB rows by NP panels of 16 keys in RB * NP registers; each step over d broadcasts one value of
// each row and loads one row of each panel.
template <int RB, int NP>
void score_tile_avx512(const float* x, int64_t d, const float* pn, int64_t w, float scale,
                       float* s, int64_t lds) {
  __m512 c[RB][NP];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 2
    for (int p = 0; p < NP; ++p) c[r][p] = _mm512_setzero_ps();
  }
  const float* pn1 = pn + d * 16;
  for (int64_t k = 0; k < d; ++k) {
    __m512 b[NP];
    b[0] = _mm512_loadu_ps(pn + k * 16);
    if (NP > 1) b[NP - 1] = _mm512_loadu_ps(pn1 + k * 16);
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * d + k]);
#pragma GCC unroll 2
      for (int p = 0; p < NP; ++p) c[r][p] = _mm512_fmadd_ps(a, b[p], c[r][p]);
    }
  }
  const __m512 vs = _mm512_set1_ps(scale);
  const __mmask16 m0 = w >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << w) - 1);
  const __mmask16 m1 = w >= 32 ? __mmask16(0xFFFF)
                               : (w > 16 ? __mmask16((1u << (w - 16)) - 1) : __mmask16(0));
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
    _mm512_mask_storeu_ps(s + r * lds, m0, _mm512_mul_ps(c[r][0], vs));
    if (NP > 1) _mm512_mask_storeu_ps(s + r * lds + 16, m1, _mm512_mul_ps(c[r][NP - 1], vs));
  }
}

template <>
inline void score_tile<float>(const float* x, int64_t d, int64_t rb, const float* pn, int64_t w,
                              float scale, float* s, int64_t lds) {
  using Tile = void (*)(const float*, int64_t, const float*, int64_t, float, float*, int64_t);
  static constexpr Tile one[8] = {
      &score_tile_avx512<1, 1>, &score_tile_avx512<2, 1>, &score_tile_avx512<3, 1>,
      &score_tile_avx512<4, 1>, &score_tile_avx512<5, 1>, &score_tile_avx512<6, 1>,
      &score_tile_avx512<7, 1>, &score_tile_avx512<8, 1>};
  static constexpr Tile two[8] = {
      &score_tile_avx512<1, 2>, &score_tile_avx512<2, 2>, &score_tile_avx512<3, 2>,
      &score_tile_avx512<4, 2>, &score_tile_avx512<5, 2>, &score_tile_avx512<6, 2>,
      &score_tile_avx512<7, 2>, &score_tile_avx512<8, 2>};
  (w > 16 ? two : one)[rb - 1](x, d, pn, w, scale, s, lds);
}
#endif

// S (R, K) = scale * X (R, d) . keys [K0, K0 + K)^T read from panels (K0 - pan.first a multiple
// of 16), for query rows i0 ... of the band: per group of 8 rows, only the panels holding a key
// some row of the group sees ([lo, hi] of its first and last rows; both grow with the row); the
// other columns are set to 0. Under a window a block's keys are a band, so this skips most of
// the two masked triangles that a whole-block product computes.
template <typename scalar_t>
void panel_scores(const scalar_t* X, int64_t R, int64_t d, const Panels<scalar_t>& pan,
                  int64_t K0, int64_t K, const Band& band, int64_t i0, scalar_t scale,
                  scalar_t* S) {
  const int64_t p_first = (K0 - pan.first) / 16;
  for (int64_t r0 = 0; r0 < R; r0 += 8) {
    const int64_t rb = std::min<int64_t>(8, R - r0);
    int64_t a, b;
    group_keys(band, i0 + r0, rb, K0, K, a, b);
    const int64_t c0 = a / 16 * 16, c1 = std::min<int64_t>(K, (b + 15) / 16 * 16);
    for (int64_t r = r0; r < r0 + rb; ++r) {
      std::fill(S + r * K, S + r * K + c0, scalar_t(0));
      std::fill(S + r * K + std::max(c0, c1), S + (r + 1) * K, scalar_t(0));
    }
    for (int64_t c = c0; c < c1; c += 32) {
      score_tile<scalar_t>(X + r0 * d, d, rb, pan.panel(p_first + c / 16),
                           std::min<int64_t>(32, c1 - c), scale, S + r0 * K + c, K);
    }
  }
}

// out (rb, n) = alpha * A (rb rows, lda apart; columns [a, b)) . B rows [a, b) (n each): the
// weights times the key (or value) rows they weight, without packing B (its rows are contiguous).
template <typename scalar_t>
inline void product_tile(const scalar_t* A, int64_t lda, int64_t rb, const scalar_t* B,
                         int64_t n, int64_t a, int64_t b, scalar_t alpha, scalar_t* out) {
  for (int64_t r = 0; r < rb; ++r) {
    scalar_t* o = out + r * n;
    std::fill(o, o + n, scalar_t(0));
    for (int64_t j = a; j < b; ++j) {
      const scalar_t w = A[r * lda + j];
      const scalar_t* row = B + j * n;
      for (int64_t i = 0; i < n; ++i) o[i] += w * row[i];
    }
    for (int64_t i = 0; i < n; ++i) o[i] *= alpha;
  }
}

#if defined(__AVX512F__)
// out row x (x < X, n each) = alpha * sum over i in [lo, hi) of A[x*sx + i*si] B[i, :] (ADD: +=),
// 64 columns at a time in X * 4 registers (masked past n): each step over i loads one row of B
// and broadcasts its X weights. The weighted sums (a row's weights over key rows: sx = lda,
// si = 1) and the gradient rows (a key's weights over query rows: sx = 1, si = lda) both run it.
template <int X, bool ADD>
void weighted_rows_avx512(const float* A, int64_t sx, int64_t si, const float* B, int64_t n,
                          int64_t lo, int64_t hi, float alpha, float* out) {
  for (int64_t i0 = 0; i0 < n; i0 += 64) {
    __mmask16 m[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      const int64_t lanes = std::min<int64_t>(16, std::max<int64_t>(0, n - i0 - 16 * v));
      m[v] = lanes == 16 ? __mmask16(0xFFFF) : __mmask16((1u << lanes) - 1);
    }
    __m512 c[X][4];
#pragma GCC unroll 8
    for (int x = 0; x < X; ++x) {
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) c[x][v] = _mm512_setzero_ps();
    }
    for (int64_t i = lo; i < hi; ++i) {
      const float* row = B + i * n + i0;
      __m512 bv[4];
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) bv[v] = _mm512_maskz_loadu_ps(m[v], row + 16 * v);
#pragma GCC unroll 8
      for (int x = 0; x < X; ++x) {
        const __m512 w = _mm512_set1_ps(A[x * sx + i * si]);
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) c[x][v] = _mm512_fmadd_ps(w, bv[v], c[x][v]);
      }
    }
    const __m512 va = _mm512_set1_ps(alpha);
#pragma GCC unroll 8
    for (int x = 0; x < X; ++x) {
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) {
        float* o = out + x * n + i0 + 16 * v;
        const __m512 base = ADD ? _mm512_maskz_loadu_ps(m[v], o) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(o, m[v], _mm512_fmadd_ps(c[x][v], va, base));
      }
    }
  }
}

using WeightedRows = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t,
                              int64_t, float, float*);
template <bool ADD>
constexpr WeightedRows kWeightedRows[4] = {
    &weighted_rows_avx512<1, ADD>, &weighted_rows_avx512<2, ADD>,
    &weighted_rows_avx512<3, ADD>, &weighted_rows_avx512<4, ADD>};

template <>
inline void product_tile<float>(const float* A, int64_t lda, int64_t rb, const float* B,
                                int64_t n, int64_t a, int64_t b, float alpha, float* out) {
  kWeightedRows<false>[rb - 1](A, lda, 1, B, n, a, b, alpha, out);
}
#endif

// out (R, n) = alpha * A (R, K) . B (K, n) for query rows i0 ... of the band, A's columns being
// keys [K0, K0 + K): per group of 4 rows only the keys some row of the group sees (A is 0 at the
// others: softmax weights and their gradients outside a row's range).
template <typename scalar_t>
void band_product(const scalar_t* A, int64_t R, int64_t K, const scalar_t* B, int64_t n,
                  int64_t K0, const Band& band, int64_t i0, scalar_t alpha, scalar_t* out) {
  for (int64_t r0 = 0; r0 < R; r0 += 4) {
    const int64_t rb = std::min<int64_t>(4, R - r0);
    int64_t a, b;
    group_keys(band, i0 + r0, rb, K0, K, a, b);
    product_tile<scalar_t>(A + r0 * K, K, rb, B, n, a, b, alpha, out + r0 * n);
  }
}

// out rows t < kb (n each) += alpha * sum over rows r in [ra, rb) of A[r, t] B[r, :]: the key (or
// value) gradient rows of kb keys, A (lda apart) their weights' columns, B the rows they weight.
template <typename scalar_t>
inline void add_tile(const scalar_t* A, int64_t lda, int64_t kb, const scalar_t* B, int64_t n,
                     int64_t ra, int64_t rb, scalar_t alpha, scalar_t* out) {
  for (int64_t t = 0; t < kb; ++t) {
    for (int64_t i = 0; i < n; ++i) {
      scalar_t acc = 0;
      for (int64_t r = ra; r < rb; ++r) acc += A[r * lda + t] * B[r * n + i];
      out[t * n + i] += alpha * acc;
    }
  }
}

#if defined(__AVX512F__)
template <>
inline void add_tile<float>(const float* A, int64_t lda, int64_t kb, const float* B, int64_t n,
                            int64_t ra, int64_t rb, float alpha, float* out) {
  kWeightedRows<true>[kb - 1](A, 1, lda, B, n, ra, rb, alpha, out);
}
#endif

// out rows of keys [K0, K0 + K) (n each) += alpha * A^T B for query rows i0 ... of the band, A
// (R, K) the weights (or their gradients), B (R, n): per group of 4 keys only the rows that see
// one of them (the rows' ranges grow with the row, so two pointers find them; A is 0 at the
// other rows).
template <typename scalar_t>
void band_add_rows(const scalar_t* A, int64_t R, int64_t K, const scalar_t* B, int64_t n,
                   int64_t K0, const Band& band, int64_t i0, scalar_t alpha, scalar_t* out) {
  int64_t ra = 0, rb = 0;
  for (int64_t j = 0; j < K; j += 4) {
    const int64_t kb = std::min<int64_t>(4, K - j);
    while (ra < R && band.hi(i0 + ra) - K0 < j) ++ra;
    while (rb < R && band.lo(i0 + rb) - K0 <= j + kb - 1) ++rb;
    if (rb > ra) add_tile<scalar_t>(A + j, K, kb, B, n, ra, rb, alpha, out + j * n);
  }
}

// A block's first key k0 moved down to the start of its panel (the keys in between are outside
// every row's range: weight 0).
template <typename scalar_t>
inline int64_t panel_start(const Panels<scalar_t>& pan, int64_t k0, int64_t k1) {
  const int64_t start = pan.first + (k0 - pan.first) / 16 * 16;
  TORCH_INTERNAL_ASSERT(k0 >= pan.first && k1 <= pan.first + pan.keys,
                        "band kernel: block keys outside the packed panels");
  return start;
}

// The task a parallel loop's index t of n stands for under a global mask, in the order 0, n-1,
// 1, n-2, ...: later query blocks see more keys, and ATen hands each thread a contiguous range of
// indices, so in plain order the last thread would get the heaviest blocks (3/4 of the work with
// 2 threads); in this order every contiguous range holds light and heavy blocks alike. Under a
// window every block costs the same, and the plain order keeps neighbouring blocks (which share
// most of their keys) on one thread.
inline int64_t task_order(int64_t t, int64_t n, const Band& band) {
  if (band.window > 0) return t;
  return t % 2 == 0 ? t / 2 : n - 1 - t / 2;
}

// n elements of v, starting at a 64-byte boundary.
template <typename scalar_t>
inline scalar_t* aligned(std::vector<scalar_t>& v, int64_t n) {
  const int64_t pad = 64 / sizeof(scalar_t);
  v.resize(n + pad);
  const auto address = reinterpret_cast<std::uintptr_t>(v.data());
  return v.data() + ((64 - address % 64) % 64) / sizeof(scalar_t);
}

// Rows [i0, i0 + R) of one head: q rows qb (R, d) against the head's keys kh and values vh, whose
// first rows are key rows key_base (0: the whole (Lk, d) head; a ring buffer: a later row) ->
// output rows ob (R, dv) and their LSE lb (R). With kpan (the window path: the block's keys
// packed into panels) the products run on the band tiles above instead of sgemm.
template <typename scalar_t>
void block_forward(const scalar_t* qb, const scalar_t* kh, const scalar_t* vh, int64_t key_base,
                   const bool* valid, const Band& band, int64_t i0, int64_t R, int64_t d,
                   int64_t dv, scalar_t scale, std::vector<scalar_t>& scores, scalar_t* ob,
                   scalar_t* lb, const Panels<scalar_t>* kpan = nullptr) {
  int64_t k0, k1;
  if (!block_keys(band, i0, R, k0, k1)) {
    std::fill(ob, ob + R * dv, scalar_t(0));
    std::fill(lb, lb + R, -std::numeric_limits<scalar_t>::infinity());
    return;
  }
  if (kpan != nullptr) k0 = panel_start(*kpan, k0, k1);
  const int64_t K = k1 - k0;
  scalar_t* S = aligned(scores, R * K + R);  // scores, then the rows' 1 / sum
  if (kpan != nullptr) {
    panel_scores(qb, R, d, *kpan, k0, K, band, i0, scale, S);
  } else {
    gemm(false, true, R, K, d, scale, qb, d, kh + (k0 - key_base) * d, d, scalar_t(0), S, K);
  }
  scalar_t* inv = S + R * K;
  softmax_rows<scalar_t>(S, R, K, i0, k0, band, valid, nullptr, lb, inv);
  if (kpan != nullptr) {
    band_product(S, R, K, vh + (k0 - key_base) * dv, dv, k0, band, i0, scalar_t(1), ob);
  } else {
    gemm(false, false, R, dv, K, scalar_t(1), S, K, vh + (k0 - key_base) * dv, dv, scalar_t(0),
         ob, dv);
  }
  for (int64_t r = 0; r < R; ++r) scale_row(ob + r * dv, inv[r], dv);
}

// The gradient of block_forward, block by block of one head: dqb (R, d) is written, dkh/dvh
// (Lk, d/dv) accumulated. gb, ob, lb: the rows' output gradient, output and LSE. kh, vh, dkh,
// dvh start at key row key_base (as in block_forward). The key gradient rows are not zeroed up
// front (a full pass over them): rows [0, filled) hold values, a block writes (beta 0) the rows
// it is the first to reach and adds to the others, and finish() zeroes the rows no block
// reached. Call start() before a head's first block, or accumulate() where the caller zeroes
// the rows (a ring buffer): every block then adds. With kpan and vpan (the window path, which
// accumulates) the products run on the band tiles above instead of sgemm.
template <typename scalar_t>
struct BlockGrad {
  std::vector<scalar_t> probs, dprobs, delta;
  int64_t filled = 0;

  void start() { filled = 0; }
  void accumulate() { filled = std::numeric_limits<int64_t>::max(); }

  void finish(scalar_t* dkh, scalar_t* dvh, int64_t Lk, int64_t d, int64_t dv) {
    if (filled < Lk) {
      std::fill(dkh + filled * d, dkh + Lk * d, scalar_t(0));
      std::fill(dvh + filled * dv, dvh + Lk * dv, scalar_t(0));
    }
  }

  // rows [k0, k1) of out (ld n, first row key_base) += alpha * A^T B, A (R, K) the block's
  // weights from column offset 0 (key k0), B (R, n): added below `filled`, written from it on.
  void add_rows(int64_t k0, int64_t k1, int64_t key_base, int64_t R, int64_t n, scalar_t alpha,
                const scalar_t* A, int64_t K, const scalar_t* Bm, scalar_t* out) const {
    const int64_t split = std::min(std::max(filled, k0), k1);
    if (split > k0) {
      gemm(true, false, split - k0, n, R, alpha, A, K, Bm, n, scalar_t(1),
           out + (k0 - key_base) * n, n);
    }
    if (k1 > split) {
      gemm(true, false, k1 - split, n, R, alpha, A + (split - k0), K, Bm, n, scalar_t(0),
           out + (split - key_base) * n, n);
    }
  }

  void run(const scalar_t* qb, const scalar_t* gb, const scalar_t* ob, const scalar_t* lb,
           const scalar_t* kh, const scalar_t* vh, int64_t key_base, const bool* valid,
           const Band& band, int64_t i0, int64_t R, int64_t d, int64_t dv, scalar_t scale,
           scalar_t* dqb, scalar_t* dkh, scalar_t* dvh, const Panels<scalar_t>* kpan = nullptr,
           const Panels<scalar_t>* vpan = nullptr) {
    int64_t k0, k1;
    if (!block_keys(band, i0, R, k0, k1)) {
      std::fill(dqb, dqb + R * d, scalar_t(0));
      return;
    }
    if (kpan != nullptr) k0 = panel_start(*kpan, k0, k1);
    if (k0 > filled) {  // rows no block reaches, between the last block's keys and these
      std::fill(dkh + (filled - key_base) * d, dkh + (k0 - key_base) * d, scalar_t(0));
      std::fill(dvh + (filled - key_base) * dv, dvh + (k0 - key_base) * dv, scalar_t(0));
      filled = k0;
    }
    const int64_t K = k1 - k0;
    const scalar_t* kb = kh + (k0 - key_base) * d;
    const scalar_t* vb = vh + (k0 - key_base) * dv;
    scalar_t* Pm = aligned(probs, R * K);
    scalar_t* dPm = aligned(dprobs, R * K);
    delta.resize(R);
    if (kpan != nullptr) {
      panel_scores(qb, R, d, *kpan, k0, K, band, i0, scale, Pm);
    } else {
      gemm(false, true, R, K, d, scale, qb, d, kb, d, scalar_t(0), Pm, K);
    }
    softmax_rows<scalar_t>(Pm, R, K, i0, k0, band, valid, lb, nullptr, nullptr);  // exp(S - lse)
    // dP = dO V^T (R, K); dS = P * (dP - rowsum(dO * O))
    if (vpan != nullptr) {
      panel_scores(gb, R, dv, *vpan, k0, K, band, i0, scalar_t(1), dPm);
    } else {
      gemm(false, true, R, K, dv, scalar_t(1), gb, dv, vb, dv, scalar_t(0), dPm, K);
    }
    for (int64_t r = 0; r < R; ++r) delta[r] = row_dot(gb + r * dv, ob + r * dv, dv);
    for (int64_t r = 0; r < R; ++r) {
      scalar_t* ds = dPm + r * K;
      const scalar_t* p = Pm + r * K;
      const scalar_t dr = delta[r];
#pragma omp simd
      for (int64_t j = 0; j < K; ++j) ds[j] = p[j] * (ds[j] - dr);
    }
    // dV += P^T dO (K, dv); dQ = scale dS K (R, d); dK += scale dS^T Q (K, d)
    if (kpan != nullptr) {  // the window path: the gradient rings are zeroed, every block adds
      TORCH_INTERNAL_ASSERT(filled == std::numeric_limits<int64_t>::max());
      band_add_rows(Pm, R, K, gb, dv, k0, band, i0, scalar_t(1), dvh + (k0 - key_base) * dv);
    } else {
      add_rows(k0, k1, key_base, R, dv, scalar_t(1), Pm, K, gb, dvh);
    }
    if (kpan != nullptr) {
      band_product(dPm, R, K, kb, d, k0, band, i0, scale, dqb);
    } else {
      gemm(false, false, R, d, K, scale, dPm, K, kb, d, scalar_t(0), dqb, d);
    }
    if (kpan != nullptr) {
      band_add_rows(dPm, R, K, qb, d, k0, band, i0, scale, dkh + (k0 - key_base) * d);
    } else {
      add_rows(k0, k1, key_base, R, d, scale, dPm, K, qb, dkh);
    }
    filled = std::max(filled, k1);
  }
};

// Multiply-adds below which a forward call does not start parallel work (about 20-40 us).
constexpr int64_t kSerialWork = int64_t(1) << 21;

template <typename scalar_t>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const bool* valid_all, const Band& band, double scale_d, int64_t block,
                  at::Tensor& out, at::Tensor& lse) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), d = q.size(3);
  const int64_t G = k.size(1), Lk = k.size(2), dv = v.size(3);
  const int64_t n_blocks = (Lq + block - 1) / block;
  const scalar_t scale = static_cast<scalar_t>(scale_d);
  const scalar_t* qp = q.data_ptr<scalar_t>();
  const scalar_t* kp = k.data_ptr<scalar_t>();
  const scalar_t* vp = v.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  scalar_t* lp = lse.data_ptr<scalar_t>();

  // A small call (a decoding step: a few query rows) runs on the calling thread: waking the
  // pool costs more than its work.
  const int64_t span = band.window > 0 ? std::min(Lk, band.window * band.P + block) : Lk;
  const int64_t tasks = B * H * n_blocks;
  const int64_t grain = B * H * Lq * span * (d + dv) < kSerialWork ? tasks : 1;
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scores;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t task = task_order(t, tasks, band);
      const int64_t bh = task / n_blocks, blk = task % n_blocks;
      const int64_t b = bh / H, h = bh % H, g = h / (H / G);
      const int64_t i0 = blk * block, R = std::min(block, Lq - i0);
      block_forward<scalar_t>(qp + (bh * Lq + i0) * d, kp + (b * G + g) * Lk * d,
                              vp + (b * G + g) * Lk * dv, 0,
                              valid_all == nullptr ? nullptr : valid_all + b * Lk, band, i0, R,
                              d, dv, scale, scores, op + (bh * Lq + i0) * dv, lp + bh * Lq + i0);
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                   const bool* valid_all, const Band& band, double scale_d, int64_t block,
                   at::Tensor& dq, at::Tensor& dk, at::Tensor& dv_out) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), d = q.size(3);
  const int64_t G = k.size(1), Lk = k.size(2), dv = v.size(3);
  const int64_t n_blocks = (Lq + block - 1) / block;
  const scalar_t scale = static_cast<scalar_t>(scale_d);
  const scalar_t* gp = grad.data_ptr<scalar_t>();
  const scalar_t* qp = q.data_ptr<scalar_t>();
  const scalar_t* kp = k.data_ptr<scalar_t>();
  const scalar_t* vp = v.data_ptr<scalar_t>();
  const scalar_t* op = out.data_ptr<scalar_t>();
  const scalar_t* lp = lse.data_ptr<scalar_t>();
  scalar_t* dqp = dq.data_ptr<scalar_t>();
  scalar_t* dkp = dk.data_ptr<scalar_t>();
  scalar_t* dvp = dv_out.data_ptr<scalar_t>();

  // One task per (batch, query head): its key/value gradient rows belong to it alone.
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    BlockGrad<scalar_t> work;
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H, g = h / (H / G);
      scalar_t* dkh = dkp + bh * Lk * d;
      scalar_t* dvh = dvp + bh * Lk * dv;
      work.start();
      for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const int64_t i0 = blk * block, R = std::min(block, Lq - i0);
        const int64_t row = bh * Lq + i0;
        work.run(qp + row * d, gp + row * dv, op + row * dv, lp + row,
                 kp + (b * G + g) * Lk * d, vp + (b * G + g) * Lk * dv, 0,
                 valid_all == nullptr ? nullptr : valid_all + b * Lk, band, i0, R, d, dv, scale,
                 dqp + row * d, dkh, dvh);
      }
      work.finish(dkh, dvh, Lk, d, dv);
    }
  });
}

// Keys and values for queries of shape qs (B, H, Lq, d) and dtype qt.
void check_keys(at::IntArrayRef qs, at::ScalarType qt, const at::Tensor& k, const at::Tensor& v,
                const std::optional<at::Tensor>& key_valid, int64_t mode, int64_t P,
                int64_t block) {
  TORCH_CHECK(k.device().is_cpu() && v.device().is_cpu(), "band attention: CPU tensors only");
  TORCH_CHECK(qs.size() == 4 && k.dim() == 4 && v.dim() == 4, "band attention: 4-D q, k, v");
  TORCH_CHECK(qt == k.scalar_type() && qt == v.scalar_type(),
              "band attention: q, k, v must share a dtype");
  TORCH_CHECK(k.is_contiguous() && v.is_contiguous(), "band attention: contiguous q, k, v");
  TORCH_CHECK(k.size(0) == qs[0] && v.size(0) == qs[0] && k.size(3) == qs[3] &&
                  v.size(1) == k.size(1) && v.size(2) == k.size(2),
              "band attention: shape mismatch");
  TORCH_CHECK(k.size(1) > 0 && qs[1] % k.size(1) == 0,
              "band attention: kv heads must divide query heads");
  TORCH_CHECK(k.size(2) >= qs[2], "band attention: fewer keys than queries");
  TORCH_CHECK(mode == kFlat || mode == kToken || mode == kNone, "band attention: mode");
  TORCH_CHECK(P >= 1 && block >= 1, "band attention: P and block must be >= 1");
  TORCH_CHECK(mode != kToken || (qs[2] % P == 0 && k.size(2) % P == 0),
              "band attention: token mask needs whole tokens");
  if (key_valid.has_value()) {
    const auto& kv = *key_valid;
    TORCH_CHECK(kv.scalar_type() == at::kBool && kv.is_contiguous() && kv.dim() == 2 &&
                    kv.size(0) == qs[0] && kv.size(1) == k.size(2),
                "band attention: key_valid must be a contiguous bool (B, Lk) tensor");
  }
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const std::optional<at::Tensor>& key_valid, int64_t mode, int64_t P,
                  int64_t block) {
  TORCH_CHECK(q.device().is_cpu() && q.is_contiguous(), "band attention: contiguous CPU q");
  check_keys(q.sizes(), q.scalar_type(), k, v, key_valid, mode, P, block);
}

std::tuple<at::Tensor, at::Tensor> band_forward(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v,
                                                const std::optional<at::Tensor>& key_valid,
                                                int64_t mode, int64_t P, int64_t window,
                                                double scale, int64_t block) {
  check_inputs(q, k, v, key_valid, mode, P, block);
  auto out = pooled_empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  auto lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  const Band band{mode, P, window, q.size(2), k.size(2)};
  const bool* valid = key_valid.has_value() ? key_valid->data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "band_forward", [&] {
    forward_impl<scalar_t>(q, k, v, valid, band, scale, block, out, lse);
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> band_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& key_valid,
    int64_t mode, int64_t P, int64_t window, double scale, int64_t block) {
  check_inputs(q, k, v, key_valid, mode, P, block);
  TORCH_CHECK(grad.is_contiguous() && out.is_contiguous() && lse.is_contiguous() &&
                  grad.sizes() == out.sizes(),
              "band attention: contiguous grad, out, lse");
  auto dq = pooled_empty(q.sizes(), q.options());
  auto dk = pooled_empty({q.size(0), q.size(1), k.size(2), k.size(3)}, q.options());
  auto dv = pooled_empty({q.size(0), q.size(1), v.size(2), v.size(3)}, q.options());
  const Band band{mode, P, window, q.size(2), k.size(2)};
  const bool* valid = key_valid.has_value() ? key_valid->data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "band_backward", [&] {
    backward_impl<scalar_t>(grad, q, k, v, out, lse, valid, band, scale, block, dq, dk, dv);
  });
  return {dq, dk, dv};
}


// ---------------------------------------------------------------------------------------------
// Mixing and collapse in one pass each (the steps around the attention).
//
// spread: out[b, h, n*P + p] = rope(sum_m alpha[m, h, p] * x[b, m, n]) at row n*P + p of the
//   (L, d) cos/sin tables (none: no rotation). Mixing + interleave + RoPE of docs/spec.md.
// gather: g' = rope^T(g) (the rotation's transpose), then
//   gx[b, m, n] = sum_{h, p} alpha[m, h, p] * g'[b, h, n*P + p] and, when x is given,
//   galpha[m, h, p] = sum_{b, n} x[b, m, n] . g'[b, h, n*P + p].
// spread's backward is gather and gather's is spread; the collapse y[b, h, n] =
// sum_{k, p} R[h, k, p] o[b, k, n*P + p] is gather with alpha = R (H, H, P).
//
// Both work on tiles of T tokens. A tile of x, x[b, :, n0:n0+T] (M, T*d), is contiguous per
// head, and a tile buffer laid out (H*P, T*d) holds the interleaved rows grouped by (h, p), so
// the mixing of a tile is one matrix product: buf = alpha^T x_tile (spread), gx_tile = alpha buf
// and galpha += x_tile buf^T (gather). Only the copy between the buffer and the interleaved
// (B, H, N*P, d) layout, with the rotation, is elementwise.

// Token tile: T*d about 1024 elements, so that a (H*P, T*d) buffer stays in L2.
inline int64_t tile_tokens(int64_t d) {
  return std::max<int64_t>(1, 1024 / std::max<int64_t>(d, 1));
}

// dst = rope(src) (transpose: rope^T) for one row of d at row `row` of the (L, d) cos/sin
// tables; no tables (nullptr): a copy.
template <typename scalar_t>
inline void rotate_into(scalar_t* __restrict__ dst, const scalar_t* __restrict__ src,
                        const scalar_t* cos_table, const scalar_t* sin_table, int64_t row,
                        int64_t d, bool transpose) {
  if (cos_table == nullptr) {
    std::copy_n(src, d, dst);
    return;
  }
  const scalar_t* c = cos_table + row * d;
  const scalar_t* s = sin_table + row * d;
  // rope: y * cos + rotate_half(y) * sin, rotate_half(y) = [-y2, y1];
  // transpose: g * cos + [ (g*sin)2, -(g*sin)1 ].
  const int64_t half = d / 2;
  if (!transpose) {
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      dst[i] = src[i] * c[i] - src[i + half] * s[i];
      dst[i + half] = src[i + half] * c[i + half] + src[i] * s[i + half];
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      dst[i] = src[i] * c[i] + src[i + half] * s[i + half];
      dst[i + half] = src[i + half] * c[i + half] - src[i] * s[i];
    }
  }
}

// A block's rows in (t, p) order, rows[(t*P + p) * n], and the same rows grouped by pseudo
// head, grouped[p * stride + t * n] (the layout the tile products read and write).
template <typename scalar_t>
inline void rows_to_grouped(const scalar_t* rows, scalar_t* grouped, int64_t stride, int64_t nt,
                            int64_t P, int64_t n) {
  for (int64_t t = 0; t < nt; ++t) {
    for (int64_t p = 0; p < P; ++p) {
      std::copy_n(rows + (t * P + p) * n, n, grouped + p * stride + t * n);
    }
  }
}

// The inverse, rotating each row by RoPE at table row row0 + t*P + p (no tables: a copy).
template <typename scalar_t>
inline void grouped_to_rows(const scalar_t* grouped, int64_t stride, scalar_t* rows, int64_t nt,
                            int64_t P, int64_t n, const scalar_t* cp, const scalar_t* sp,
                            int64_t row0) {
  for (int64_t t = 0; t < nt; ++t) {
    for (int64_t p = 0; p < P; ++p) {
      rotate_into(rows + (t * P + p) * n, grouped + p * stride + t * n, cp, sp,
                  row0 + t * P + p, n, false);
    }
  }
}

// out (n) = sum_m a[m*lda] x[m*ldx + .] for M source rows: one mixed row. Chunks of two vector
// registers are accumulated in registers over m (a BLAS product with an inner dimension of a few
// heads spends more on packing than on arithmetic).
template <typename scalar_t>
inline void mix_row(const scalar_t* x, int64_t ldx, int64_t M, const scalar_t* a, int64_t lda,
                    int64_t n, scalar_t* __restrict__ out) {
  constexpr int64_t C = 128 / sizeof(scalar_t);
  int64_t i0 = 0;
  for (; i0 + C <= n; i0 += C) {
    scalar_t acc[C];
    const scalar_t a0 = a[0];
#pragma omp simd
    for (int64_t i = 0; i < C; ++i) acc[i] = a0 * x[i0 + i];
    for (int64_t m = 1; m < M; ++m) {
      const scalar_t am = a[m * lda];
      const scalar_t* xm = x + m * ldx + i0;
#pragma omp simd
      for (int64_t i = 0; i < C; ++i) acc[i] += am * xm[i];
    }
#pragma omp simd
    for (int64_t i = 0; i < C; ++i) out[i0 + i] = acc[i];
  }
  for (; i0 < n; ++i0) {
    scalar_t sum = 0;
    for (int64_t m = 0; m < M; ++m) sum += a[m * lda] * x[m * ldx + i0];
    out[i0] = sum;
  }
}

#if defined(__AVX512F__)
template <>
inline void mix_row<float>(const float* x, int64_t ldx, int64_t M, const float* a, int64_t lda,
                           int64_t n, float* __restrict__ out) {
  int64_t i0 = 0;
  for (; i0 + 64 <= n; i0 += 64) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t m = 0; m < M; ++m) {
      const __m512 am = _mm512_set1_ps(a[m * lda]);
      const float* xm = x + m * ldx + i0;
      s0 = _mm512_fmadd_ps(am, _mm512_loadu_ps(xm), s0);
      s1 = _mm512_fmadd_ps(am, _mm512_loadu_ps(xm + 16), s1);
      s2 = _mm512_fmadd_ps(am, _mm512_loadu_ps(xm + 32), s2);
      s3 = _mm512_fmadd_ps(am, _mm512_loadu_ps(xm + 48), s3);
    }
    _mm512_storeu_ps(out + i0, s0);
    _mm512_storeu_ps(out + i0 + 16, s1);
    _mm512_storeu_ps(out + i0 + 32, s2);
    _mm512_storeu_ps(out + i0 + 48, s3);
  }
  for (; i0 + 16 <= n; i0 += 16) {
    __m512 s0 = _mm512_setzero_ps();
    for (int64_t m = 0; m < M; ++m) {
      s0 = _mm512_fmadd_ps(_mm512_set1_ps(a[m * lda]), _mm512_loadu_ps(x + m * ldx + i0), s0);
    }
    _mm512_storeu_ps(out + i0, s0);
  }
  for (; i0 < n; ++i0) {
    float sum = 0;
    for (int64_t m = 0; m < M; ++m) sum += a[m * lda] * x[m * ldx + i0];
    out[i0] = sum;
  }
}
#endif

// mix_row then RoPE (rotate_into) in one: true where a vectorised version served it.
template <typename scalar_t>
inline bool mix_rotate_row(const scalar_t*, int64_t, int64_t, const scalar_t*, int64_t, int64_t,
                           const scalar_t*, const scalar_t*, scalar_t*) {
  return false;
}
#if defined(__AVX512F__)
// Head dim 64 in float32: the mixed row stays in four registers (two per half) for the rotation.
template <>
inline bool mix_rotate_row<float>(const float* x, int64_t ldx, int64_t M, const float* a,
                                  int64_t lda, int64_t n, const float* c, const float* s,
                                  float* __restrict__ out) {
  if (n != 64) return false;
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (int64_t m = 0; m < M; ++m) {
    const __m512 am = _mm512_set1_ps(a[m * lda]);
    const float* xm = x + m * ldx;
    s0 = _mm512_fmadd_ps(am, _mm512_loadu_ps(xm), s0);
    s1 = _mm512_fmadd_ps(am, _mm512_loadu_ps(xm + 16), s1);
    s2 = _mm512_fmadd_ps(am, _mm512_loadu_ps(xm + 32), s2);
    s3 = _mm512_fmadd_ps(am, _mm512_loadu_ps(xm + 48), s3);
  }
  // first half: y1 c - y2 s; second half: y2 c + y1 s
  _mm512_storeu_ps(out, _mm512_fnmadd_ps(s2, _mm512_loadu_ps(s),
                                         _mm512_mul_ps(s0, _mm512_loadu_ps(c))));
  _mm512_storeu_ps(out + 16, _mm512_fnmadd_ps(s3, _mm512_loadu_ps(s + 16),
                                              _mm512_mul_ps(s1, _mm512_loadu_ps(c + 16))));
  _mm512_storeu_ps(out + 32, _mm512_fmadd_ps(s0, _mm512_loadu_ps(s + 32),
                                             _mm512_mul_ps(s2, _mm512_loadu_ps(c + 32))));
  _mm512_storeu_ps(out + 48, _mm512_fmadd_ps(s1, _mm512_loadu_ps(s + 48),
                                             _mm512_mul_ps(s3, _mm512_loadu_ps(c + 48))));
  return true;
}
#endif

// The mixed (and, with tables, rotated) rows of nt tokens of x (M source heads, tokens ldx apart
// per head, n per token) for `heads` target heads, as spread computes them: row (t, p) of head h
// = rope(sum_m alpha[m*lda + h*P + p] x[m, t]) at table row row0 + t*P + p, written to
// dst + h*dst_stride + (t*P + p)*n. row: n elements of scratch.
template <typename scalar_t>
void mix_rows(const scalar_t* x, int64_t ldx, int64_t M, const scalar_t* alpha, int64_t lda,
              int64_t heads, int64_t P, int64_t nt, int64_t n, const scalar_t* cp,
              const scalar_t* sp, int64_t row0, scalar_t* dst, int64_t dst_stride,
              scalar_t* row) {
  for (int64_t t = 0; t < nt; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t p = 0; p < P; ++p) {
        scalar_t* out = dst + h * dst_stride + (t * P + p) * n;
        const scalar_t* a = alpha + h * P + p;
        const int64_t r = row0 + t * P + p;
        if (cp == nullptr) {
          mix_row(x + t * n, ldx, M, a, lda, n, out);
        } else if (!mix_rotate_row(x + t * n, ldx, M, a, lda, n, cp + r * n, sp + r * n, out)) {
          mix_row(x + t * n, ldx, M, a, lda, n, row);
          rotate_into(out, row, cp, sp, r, n, false);
        }
      }
    }
  }
}

void check_mixing(const at::Tensor& x, const at::Tensor& alpha,
                  const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin,
                  int64_t rows) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(),
              "mixing: contiguous 4-D CPU tensor");
  TORCH_CHECK(alpha.dim() == 3 && alpha.is_contiguous() && alpha.scalar_type() == x.scalar_type(),
              "mixing: contiguous alpha (M, H, P) of the tensor's dtype");
  TORCH_CHECK(cos.has_value() == sin.has_value(), "mixing: cos and sin together");
  if (cos.has_value()) {
    for (const auto* t : {&*cos, &*sin}) {
      TORCH_CHECK(t->is_contiguous() && t->dim() == 2 && t->size(0) == rows &&
                      t->size(1) == x.size(3) && t->scalar_type() == x.scalar_type(),
                  "mixing: cos/sin tables (L, d) of the tensor's dtype");
    }
    TORCH_CHECK(x.size(3) % 2 == 0, "mixing: RoPE needs an even head dim");
  }
}

at::Tensor mix_spread(const at::Tensor& x, const at::Tensor& alpha,
                      const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin) {
  const int64_t B = x.size(0), M = x.size(1), N = x.size(2), d = x.size(3);
  TORCH_CHECK(alpha.size(0) == M, "spread: alpha (M, H, P) must match x's M heads");
  const int64_t H = alpha.size(1), P = alpha.size(2);
  check_mixing(x, alpha, cos, sin, N * P);
  auto out = pooled_empty({B, H, N * P, d}, x.options());
  const int64_t T = tile_tokens(d), n_tiles = (N + T - 1) / T, HP = H * P;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mix_spread", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* ap = alpha.data_ptr<scalar_t>();
    const scalar_t* cp = cos.has_value() ? cos->data_ptr<scalar_t>() : nullptr;
    const scalar_t* sp = sin.has_value() ? sin->data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * n_tiles, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf(HP * T * d);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / n_tiles, n0 = (task % n_tiles) * T, nt = std::min(T, N - n0);
        const int64_t w = nt * d;  // buf (HP, nt*d) = alpha^T (HP, M) x_tile (M, nt*d)
        gemm(true, false, HP, w, M, scalar_t(1), ap, HP, xp + (b * M * N + n0) * d, N * d,
             scalar_t(0), buf.data(), w);
        for (int64_t h = 0; h < H; ++h) {  // rows written in order: (t, p) within head h
          grouped_to_rows(buf.data() + h * P * w, w, op + ((b * H + h) * N + n0) * P * d, nt, P, d,
                          cp, sp, n0 * P);
        }
      }
    });
  });
  return out;
}

// The mixing's transpose on one tile of w = nt*d columns, buf (HP, w) holding the tile's rows
// grouped by (head, p), already through RoPE^T: gx_tile (M, w) = alpha (M, HP) buf (skipped
// with gx nullptr), and galpha (M, HP) += x_tile (M, w) buf^T, accumulated in partial (double;
// skipped with x nullptr). ldx, ldg: the tiles' row strides; ldb: buf's (default w).
template <typename scalar_t>
inline void gather_tile(const scalar_t* buf, int64_t w, const scalar_t* alpha, int64_t M,
                        int64_t HP, const scalar_t* x, int64_t ldx, scalar_t* gx, int64_t ldg,
                        std::vector<scalar_t>& tile, std::vector<double>& partial,
                        int64_t ldb = 0) {
  if (ldb == 0) ldb = w;
  if (gx != nullptr) {
    gemm(false, false, M, w, HP, scalar_t(1), alpha, HP, buf, ldb, scalar_t(0), gx, ldg);
  }
  if (x == nullptr) return;
  tile.resize(M * HP);
  gemm(false, true, M, HP, w, scalar_t(1), x, ldx, buf, ldb, scalar_t(0), tile.data(), HP);
  for (int64_t i = 0; i < M * HP; ++i) partial[i] += tile[i];
}

// With want_gx false gx is not computed (the collapse's weight gradient needs galpha only) and
// comes back empty.
std::tuple<at::Tensor, at::Tensor> mix_gather(const at::Tensor& g, const at::Tensor& alpha,
                                              const std::optional<at::Tensor>& x,
                                              const std::optional<at::Tensor>& cos,
                                              const std::optional<at::Tensor>& sin,
                                              bool want_gx) {
  const int64_t B = g.size(0), H = g.size(1), L = g.size(2), d = g.size(3);
  const int64_t M = alpha.size(0), P = alpha.size(2);
  TORCH_CHECK(alpha.size(1) == H && L % P == 0, "gather: alpha (M, H, P) must match g");
  check_mixing(g, alpha, cos, sin, L);
  const int64_t N = L / P;
  if (x.has_value()) {
    TORCH_CHECK(x->is_contiguous() && x->scalar_type() == g.scalar_type() &&
                    x->sizes() == at::IntArrayRef({B, M, N, d}),
                "gather: x must be contiguous (B, M, N, d)");
  }
  TORCH_CHECK(want_gx || x.has_value(), "gather: nothing to compute without gx and x");
  auto gx = want_gx ? pooled_empty({B, M, N, d}, g.options()) : at::empty({0}, g.options());
  auto galpha = at::zeros({M, H, P}, g.options().dtype(at::kDouble));
  const int64_t T = tile_tokens(d), n_tiles = (N + T - 1) / T, HP = H * P;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "mix_gather", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* ap = alpha.data_ptr<scalar_t>();
    const scalar_t* xp = x.has_value() ? x->data_ptr<scalar_t>() : nullptr;
    const scalar_t* cp = cos.has_value() ? cos->data_ptr<scalar_t>() : nullptr;
    const scalar_t* sp = sin.has_value() ? sin->data_ptr<scalar_t>() : nullptr;
    scalar_t* gxp = want_gx ? gx.data_ptr<scalar_t>() : nullptr;
    double* gap = galpha.data_ptr<double>();
    std::mutex lock;
    at::parallel_for(0, B * n_tiles, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf(HP * T * d), tile(xp != nullptr ? M * HP : 0);
      std::vector<double> partial(tile.size(), 0.0);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / n_tiles, n0 = (task % n_tiles) * T, nt = std::min(T, N - n0);
        const int64_t w = nt * d;
        for (int64_t h = 0; h < H; ++h) {  // buf (HP, nt*d): rope^T of the tile's rows
          for (int64_t t = 0; t < nt; ++t) {
            for (int64_t p = 0; p < P; ++p) {
              const int64_t row = (n0 + t) * P + p;
              rotate_into(buf.data() + (h * P + p) * w + t * d, gp + ((b * H + h) * L + row) * d,
                          cp, sp, row, d, true);
            }
          }
        }
        gather_tile(buf.data(), w, ap, M, HP, xp == nullptr ? nullptr : xp + (b * M * N + n0) * d,
                    N * d, gxp == nullptr ? nullptr : gxp + (b * M * N + n0) * d, N * d, tile,
                    partial);
      }
      if (xp != nullptr) {
        std::lock_guard<std::mutex> guard(lock);
        for (int64_t i = 0; i < M * HP; ++i) gap[i] += partial[i];
      }
    });
  });
  return {gx, galpha.to(g.scalar_type())};
}

// ---------------------------------------------------------------------------------------------
// IHA around the band kernel, with the query mixing + RoPE and the collapse fused in.
//
// fused_forward: y[b, h, n] = sum_{k, p} R[h, k, p] o[b, k, n*P + p], where o is the band
//   attention of qt = spread(xq, alpha_q, cos, sin) against kt, vt (already spread). One task
//   per (batch, block of whole tokens), all heads: the block's query rows are mixed (one matrix
//   product, as in spread) and rotated into a task buffer, so qt is never written out, and its
//   output rows are collapsed (one product) while still in cache. o and the LSE are returned for
//   the backward.
// fused_backward: one task per (batch, head) as in backward_impl; each block's query rows and
//   output gradient rows dO = spread(grad_y, R) (the collapse's backward) are recomputed in task
//   buffers instead of read, and R's gradient dR[h', h, p] = sum_{b, n} grad_y[b, h', n] .
//   o[b, h, n*P + p] is taken from the block's o rows. The query gradient then goes through
//   gather (RoPE^T, alpha_q^T). Returns dxq, dalpha_q, dkt and dvt per query head
//   (B, H, Lk, d), dR.

void check_fused(const at::Tensor& xq, const at::Tensor& alpha_q,
                 const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin,
                 const at::Tensor& kt, const at::Tensor& vt,
                 const std::optional<at::Tensor>& key_valid, const at::Tensor& R, int64_t mode,
                 int64_t P, int64_t block) {
  TORCH_CHECK(xq.dim() == 4 && alpha_q.dim() == 3 && alpha_q.size(0) == xq.size(1) &&
                  alpha_q.size(2) == P,
              "fused IHA: alpha_q (M, H, P) must match xq (B, M, N, d) and P");
  check_mixing(xq, alpha_q, cos, sin, xq.size(2) * P);
  const int64_t H = alpha_q.size(1);
  TORCH_CHECK(R.dim() == 3 && R.size(0) == H && R.size(1) == H && R.size(2) == P &&
                  R.is_contiguous() && R.scalar_type() == xq.scalar_type(),
              "fused IHA: R must be a contiguous (H, H, P) tensor of xq's dtype");
  TORCH_CHECK(P >= 1 && block >= P && block % P == 0,
              "fused IHA: block must be a positive multiple of P");
  const std::vector<int64_t> qs{xq.size(0), H, xq.size(2) * P, xq.size(3)};
  check_keys(qs, xq.scalar_type(), kt, vt, key_valid, mode, P, block);
  TORCH_CHECK(kt.size(2) % P == 0, "fused IHA: keys must be whole tokens");
}

// Sizes of a fused call: xq (B, M, N, d), alpha_q (M, H, P), kt (B, G, Lk, d), vt (.., dv);
// blocks of T tokens.
struct FusedDims {
  int64_t B, M, N, d, H, G, P, Lq, Lk, dv, HP, T, n_blocks;
  FusedDims(const at::Tensor& xq, const at::Tensor& alpha_q, const at::Tensor& kt,
            const at::Tensor& vt, int64_t block)
      : B(xq.size(0)), M(xq.size(1)), N(xq.size(2)), d(xq.size(3)), H(alpha_q.size(1)),
        G(kt.size(1)), P(alpha_q.size(2)), Lq(N * P), Lk(kt.size(2)), dv(vt.size(3)),
        HP(H * P), T(block / P), n_blocks((N + T - 1) / T) {}
};

// The inputs the fused ops read, as typed pointers (tables: nullptr without RoPE; the window
// ops pass the unmixed keys and values as kt and vt).
template <typename scalar_t>
struct FusedInputs {
  const scalar_t *xp, *ap, *cp, *sp, *kp, *vp, *rp;
  FusedInputs(const at::Tensor& xq, const at::Tensor& alpha_q,
              const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin,
              const at::Tensor& kt, const at::Tensor& vt, const at::Tensor& R)
      : xp(xq.data_ptr<scalar_t>()), ap(alpha_q.data_ptr<scalar_t>()),
        cp(cos.has_value() ? cos->data_ptr<scalar_t>() : nullptr),
        sp(sin.has_value() ? sin->data_ptr<scalar_t>() : nullptr), kp(kt.data_ptr<scalar_t>()),
        vp(vt.data_ptr<scalar_t>()), rp(R.data_ptr<scalar_t>()) {}
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_forward(
    const at::Tensor& xq, const at::Tensor& alpha_q, const std::optional<at::Tensor>& cos,
    const std::optional<at::Tensor>& sin, const at::Tensor& kt, const at::Tensor& vt,
    const std::optional<at::Tensor>& key_valid, const at::Tensor& R, int64_t mode, int64_t P,
    int64_t window, double scale_d, int64_t block) {
  check_fused(xq, alpha_q, cos, sin, kt, vt, key_valid, R, mode, P, block);
  const FusedDims z(xq, alpha_q, kt, vt, block);
  const int64_t B = z.B, M = z.M, N = z.N, d = z.d, H = z.H, G = z.G, Lq = z.Lq, Lk = z.Lk;
  const int64_t dv = z.dv, HP = z.HP, T = z.T, n_blocks = z.n_blocks;
  auto o = pooled_empty({B, H, Lq, dv}, xq.options());
  auto lse = at::empty({B, H, Lq}, xq.options());
  auto y = pooled_empty({B, H, N, dv}, xq.options());
  const Band band{mode, P, window, Lq, Lk};
  const bool* valid_all = key_valid.has_value() ? key_valid->data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(xq.scalar_type(), "fused_forward", [&] {
    const scalar_t scale = static_cast<scalar_t>(scale_d);
    const FusedInputs<scalar_t> in(xq, alpha_q, cos, sin, kt, vt, R);
    const scalar_t *xp = in.xp, *ap = in.ap, *cp = in.cp, *sp = in.sp, *kp = in.kp, *vp = in.vp;
    const scalar_t* rp = in.rp;
    scalar_t* op = o.data_ptr<scalar_t>();
    scalar_t* lp = lse.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, B * n_blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> qmix(HP * T * d), qblk(block * d), omix(HP * T * dv), scores;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t task = task_order(t, B * n_blocks, band);
        const int64_t b = task / n_blocks, n0 = (task % n_blocks) * T, nt = std::min(T, N - n0);
        const int64_t i0 = n0 * P, rows = nt * P, w = nt * d, wv = nt * dv;
        const bool* valid = valid_all == nullptr ? nullptr : valid_all + b * Lk;
        // qmix (HP, nt*d) = alpha_q^T (HP, M) xq_tile (M, nt*d)
        gemm(true, false, HP, w, M, scalar_t(1), ap, HP, xp + (b * M * N + n0) * d, N * d,
             scalar_t(0), qmix.data(), w);
        for (int64_t h = 0; h < H; ++h) {
          const int64_t g = h / (H / G);
          grouped_to_rows(qmix.data() + h * P * w, w, qblk.data(), nt, P, d, cp, sp, i0);
          scalar_t* ob = op + ((b * H + h) * Lq + i0) * dv;
          block_forward<scalar_t>(qblk.data(), kp + (b * G + g) * Lk * d,
                                  vp + (b * G + g) * Lk * dv, 0, valid, band, i0, rows, d, dv,
                                  scale, scores, ob, lp + (b * H + h) * Lq + i0);
          rows_to_grouped(ob, omix.data() + h * P * wv, wv, nt, P, dv);  // omix (HP, nt*dv)
        }
        // y_tile (H, nt*dv) = R (H, HP) omix
        gemm(false, false, H, wv, HP, scalar_t(1), rp, HP, omix.data(), wv, scalar_t(0),
             yp + (b * H * N + n0) * dv, N * dv);
      }
    });
  });
  return {y, o, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_backward(
    const at::Tensor& grad, const at::Tensor& xq, const at::Tensor& alpha_q,
    const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin,
    const at::Tensor& kt, const at::Tensor& vt, const at::Tensor& o, const at::Tensor& lse,
    const std::optional<at::Tensor>& key_valid, const at::Tensor& R, int64_t mode, int64_t P,
    int64_t window, double scale_d, int64_t block) {
  check_fused(xq, alpha_q, cos, sin, kt, vt, key_valid, R, mode, P, block);
  const FusedDims z(xq, alpha_q, kt, vt, block);
  const int64_t B = z.B, M = z.M, N = z.N, d = z.d, H = z.H, G = z.G, Lq = z.Lq, Lk = z.Lk;
  const int64_t dv = z.dv, HP = z.HP, T = z.T, n_blocks = z.n_blocks;
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == at::IntArrayRef({B, H, N, dv}) &&
                  o.is_contiguous() && o.sizes() == at::IntArrayRef({B, H, Lq, dv}) &&
                  lse.is_contiguous() && lse.sizes() == at::IntArrayRef({B, H, Lq}),
              "fused IHA: contiguous grad (B, H, N, dv), o (B, H, N*P, dv), lse (B, H, N*P)");
  auto dq = pooled_empty({B, H, Lq, d}, xq.options());
  auto dk = pooled_empty({B, H, Lk, d}, xq.options());
  auto dvt = pooled_empty({B, H, Lk, dv}, xq.options());
  auto dR = at::zeros({H, H, P}, xq.options().dtype(at::kDouble));
  const Band band{mode, P, window, Lq, Lk};
  const bool* valid_all = key_valid.has_value() ? key_valid->data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(xq.scalar_type(), "fused_backward", [&] {
    const scalar_t scale = static_cast<scalar_t>(scale_d);
    const FusedInputs<scalar_t> in(xq, alpha_q, cos, sin, kt, vt, R);
    const scalar_t *xp = in.xp, *ap = in.ap, *cp = in.cp, *sp = in.sp, *kp = in.kp, *vp = in.vp;
    const scalar_t* rp = in.rp;
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    const scalar_t* op = o.data_ptr<scalar_t>();
    const scalar_t* lp = lse.data_ptr<scalar_t>();
    scalar_t* dqp = dq.data_ptr<scalar_t>();
    scalar_t* dkp = dk.data_ptr<scalar_t>();
    scalar_t* dvp = dvt.data_ptr<scalar_t>();
    double* drp = dR.data_ptr<double>();
    std::mutex lock;
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      BlockGrad<scalar_t> work;
      std::vector<scalar_t> mix(P * T * std::max(d, dv)), qblk(block * d), gblk(block * dv);
      std::vector<scalar_t> tile(H * P);
      std::vector<double> partial(H * H * P, 0.0);
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / H, h = bh % H, g = h / (H / G);
        const scalar_t* gy = gp + b * H * N * dv;
        scalar_t* dkh = dkp + bh * Lk * d;
        scalar_t* dvh = dvp + bh * Lk * dv;
        work.start();
        for (int64_t blk = 0; blk < n_blocks; ++blk) {
          const int64_t n0 = blk * T, nt = std::min(T, N - n0);
          const int64_t i0 = n0 * P, rows = nt * P, w = nt * d, wv = nt * dv;
          const scalar_t* ob = op + (bh * Lq + i0) * dv;
          // query rows of head h: mix (P, nt*d) = alpha_q[:, h, :]^T (P, M) xq_tile (M, nt*d)
          gemm(true, false, P, w, M, scalar_t(1), ap + h * P, HP, xp + (b * M * N + n0) * d,
               N * d, scalar_t(0), mix.data(), w);
          grouped_to_rows(mix.data(), w, qblk.data(), nt, P, d, cp, sp, i0);
          // dO rows of head h: mix (P, nt*dv) = R[:, h, :]^T (P, H) grad_tile (H, nt*dv)
          gemm(true, false, P, wv, H, scalar_t(1), rp + h * P, HP, gy + n0 * dv, N * dv,
               scalar_t(0), mix.data(), wv);
          grouped_to_rows<scalar_t>(mix.data(), wv, gblk.data(), nt, P, dv, nullptr, nullptr, i0);
          // dR[:, h, :] += grad_tile (H, nt*dv) o_h^T, o_h (P, nt*dv) the block's o rows by p
          rows_to_grouped(ob, mix.data(), wv, nt, P, dv);
          gemm(false, true, H, P, wv, scalar_t(1), gy + n0 * dv, N * dv, mix.data(), wv,
               scalar_t(0), tile.data(), P);
          for (int64_t h2 = 0; h2 < H; ++h2) {
            for (int64_t p = 0; p < P; ++p) partial[(h2 * H + h) * P + p] += tile[h2 * P + p];
          }
          work.run(qblk.data(), gblk.data(), ob, lp + bh * Lq + i0, kp + (b * G + g) * Lk * d,
                   vp + (b * G + g) * Lk * dv, 0,
                   valid_all == nullptr ? nullptr : valid_all + b * Lk, band, i0, rows, d, dv,
                   scale, dqp + (bh * Lq + i0) * d, dkh, dvh);
        }
        work.finish(dkh, dvh, Lk, d, dv);
      }
      std::lock_guard<std::mutex> guard(lock);
      for (int64_t i = 0; i < H * H * P; ++i) drp[i] += partial[i];
    });
  });
  auto [dxq, dalpha] = mix_gather(dq, alpha_q, xq, cos, sin, true);
  return {dxq, dalpha, dk, dvt, dR.to(xq.scalar_type())};
}

// ---------------------------------------------------------------------------------------------
// IHA under a sliding window with the key and value mixing fused in as well.
//
// Under a causal window a block of query rows reads only the key rows of its own tokens and of
// the window before them. fused_window_forward / fused_window_backward take the keys and values
// before mixing (xk, xv) and keep, per thread, a ring of the mixed and rotated key and value rows
// that the thread's blocks read: each block spreads the rows of the tokens it is the first to
// need into the ring (one small matrix product per tile, as in spread), and the band reads them
// from cache, so kt and vt (B, G, N*P, d) are never written nor read back. The backward
// recomputes the rows the same way and accumulates the key and value gradient rows in rings of
// their own; a token's rows are gathered (RoPE^T, alpha^T, as in gather) as soon as no later block
// of the thread reads them, so the gradients on xk and xv come out directly instead of through
// two (B, H, N*P, d) gradient tensors written and read again. The query gradient is gathered
// chunk by chunk (a few blocks, see kChunkBlocks) the same way. A thread whose range of blocks
// starts mid-sequence also adds to key tokens of the thread before it (its first block's window
// reaches back): those tokens' gradients are gathered into a halo of its own and added after the
// parallel loop (the gather is linear); every other token is written by the one thread whose
// query rows cover it.

// Key (or value) rows of `heads` heads for tokens [base, hi), at most cap tokens, with their
// gradient rows where the ring keeps gradients: row (t - base)*P + p of head h at
// (h*cap*P + (t - base)*P + p)*n.
// Per-thread scratch memory kept from call to call (the parallel pool's threads live on): the
// rings below take a few MiB, which a fresh allocation would page-fault in on every call. A
// buffer over kScratchKeepBytes is freed when its user is done with it.
constexpr size_t kScratchKeepBytes = size_t(64) << 20;

template <typename scalar_t>
struct Scratch {
  std::vector<scalar_t>& v;
  Scratch(int slot, size_t n) : v(buffers()[slot]) {
    if (v.size() < n) v.resize(n);
  }
  ~Scratch() {
    if (v.capacity() * sizeof(scalar_t) > kScratchKeepBytes) std::vector<scalar_t>().swap(v);
  }
  scalar_t* data() { return v.data(); }
  static std::vector<scalar_t>* buffers() {
    thread_local std::vector<scalar_t> slots[6];
    return slots;
  }
};

template <typename scalar_t>
struct Ring {
  int64_t heads, P, n, cap, tile;
  bool with_grads;
  int64_t base = 0, hi = 0, batch = -1;
  Scratch<scalar_t> rows, grads, buf;

  // slot: the first of the three scratch buffers it takes
  Ring(int slot, int64_t heads, int64_t P, int64_t n, int64_t cap, int64_t tile,
       bool with_grads)
      : heads(heads), P(P), n(n), cap(cap), tile(tile), with_grads(with_grads),
        rows(slot, heads * cap * P * n), grads(slot + 1, with_grads ? heads * cap * P * n : 0),
        buf(slot + 2, heads * P * tile * n) {}

  scalar_t* head(int64_t h) { return rows.data() + h * cap * P * n; }
  scalar_t* grad_head(int64_t h) { return grads.data() + h * cap * P * n; }
  int64_t first_row() const { return base * P; }

  // Holds tokens [t_lo, t_hi) of batch b afterwards: tokens below t_lo may be dropped (the
  // caller has gathered their gradients), new ones are spread from x (M, N, n) of batch b with
  // alpha (M, heads, P) and rotated by the tables (nullptr: no RoPE); their gradient rows are
  // zeroed. t_lo never decreases within a batch.
  void hold(int64_t b, int64_t t_lo, int64_t t_hi, const scalar_t* x, int64_t M, int64_t N,
            const scalar_t* alpha, const scalar_t* cp, const scalar_t* sp) {
    if (b != batch || t_lo >= hi) {
      batch = b;
      base = hi = t_lo;
    }
    TORCH_INTERNAL_ASSERT(t_lo >= base && t_hi - t_lo <= cap, "ring: tokens out of order");
    if (t_hi - base > cap) {  // move the rows still needed to the front
      const int64_t shift = (t_lo - base) * P * n, keep = (hi - t_lo) * P * n;
      for (int64_t h = 0; h < heads; ++h) {
        std::copy_n(head(h) + shift, keep, head(h));
        if (with_grads) std::copy_n(grad_head(h) + shift, keep, grad_head(h));
      }
      base = t_lo;
    }
    if (t_hi > hi) {
      mix_rows(x + hi * n, N * n, M, alpha, heads * P, heads, P, t_hi - hi, n, cp, sp, hi * P,
               head(0) + (hi - base) * P * n, cap * P * n, buf.data());
      for (int64_t h = 0; h < heads && with_grads; ++h) {
        std::fill_n(grad_head(h) + (hi - base) * P * n, (t_hi - hi) * P * n, scalar_t(0));
      }
      hi = t_hi;
    }
  }

  // Gathers the gradient rows of held tokens [f0, f1): gx (M, ., n) at token f rows
  // gx + (f - gx_first)*n (row stride ldg) and alpha's gradient into partial (gather_tile).
  void gather(int64_t f0, int64_t f1, const scalar_t* x, int64_t M, int64_t N,
              const scalar_t* alpha, const scalar_t* cp, const scalar_t* sp, scalar_t* gx,
              int64_t gx_first, int64_t ldg, std::vector<scalar_t>& tmp,
              std::vector<double>& partial) {
    for (int64_t n0 = f0; n0 < f1; n0 += tile) {
      const int64_t nt = std::min(tile, f1 - n0), w = nt * n;
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t t = 0; t < nt; ++t) {
          for (int64_t p = 0; p < P; ++p) {
            rotate_into(buf.data() + (h * P + p) * w + t * n,
                        grad_head(h) + ((n0 + t - base) * P + p) * n, cp, sp, (n0 + t) * P + p,
                        n, true);
          }
        }
      }
      gather_tile(buf.data(), w, alpha, M, heads * P, x + n0 * n, N * n,
                  gx + (n0 - gx_first) * n, ldg, tmp, partial);
    }
  }
};

void check_window(const at::Tensor& xq, const at::Tensor& alpha_q, const at::Tensor& xk,
                  const at::Tensor& alpha_k, const at::Tensor& xv, const at::Tensor& alpha_v,
                  const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin,
                  const std::optional<at::Tensor>& key_valid, const at::Tensor& R, int64_t mode,
                  int64_t P, int64_t window, int64_t block) {
  TORCH_CHECK(window > 0 && (mode == kFlat || mode == kToken),
              "fused window IHA: a causal (flat or token) mask with a window >= 1");
  TORCH_CHECK(xk.dim() == 4 && xv.dim() == 4 && xk.size(0) == xq.size(0) &&
                  xv.size(0) == xq.size(0) && xk.size(1) == xv.size(1) &&
                  xk.size(2) == xq.size(2) && xv.size(2) == xq.size(2) &&
                  xk.size(3) == xq.size(3),
              "fused window IHA: xk (B, Mk, N, d) and xv (B, Mk, N, dv) must match xq "
              "(B, M, N, d)");
  check_mixing(xk, alpha_k, cos, sin, xk.size(2) * P);
  check_mixing(xv, alpha_v, std::nullopt, std::nullopt, xv.size(2) * P);
  TORCH_CHECK(alpha_k.size(0) == xk.size(1) && alpha_v.size(0) == xv.size(1) &&
                  alpha_k.size(1) == alpha_v.size(1) && alpha_k.size(2) == P &&
                  alpha_v.size(2) == P && alpha_q.size(1) % alpha_k.size(1) == 0,
              "fused window IHA: alpha_k and alpha_v (Mk, G, P) with G dividing the query heads");
  TORCH_CHECK(xq.dim() == 4 && alpha_q.dim() == 3 && alpha_q.size(0) == xq.size(1) &&
                  alpha_q.size(2) == P,
              "fused window IHA: alpha_q (M, H, P) must match xq (B, M, N, d) and P");
  check_mixing(xq, alpha_q, cos, sin, xq.size(2) * P);
  const int64_t H = alpha_q.size(1);
  TORCH_CHECK(R.dim() == 3 && R.size(0) == H && R.size(1) == H && R.size(2) == P &&
                  R.is_contiguous() && R.scalar_type() == xq.scalar_type(),
              "fused window IHA: R must be a contiguous (H, H, P) tensor of xq's dtype");
  TORCH_CHECK(P >= 1 && block >= P && block % P == 0,
              "fused window IHA: block must be a positive multiple of P");
  TORCH_CHECK(xk.scalar_type() == xq.scalar_type() && xv.scalar_type() == xq.scalar_type(),
              "fused window IHA: xq, xk and xv of one dtype");
  if (key_valid.has_value()) {
    TORCH_CHECK(key_valid->scalar_type() == at::kBool && key_valid->is_contiguous() &&
                    key_valid->sizes() == at::IntArrayRef({xq.size(0), xq.size(2) * P}),
                "fused window IHA: key_valid must be a contiguous bool (B, N*P) tensor");
  }
}

// The key tokens [first, last) each block of T tokens reads (any: it reads some), first made
// non-decreasing by a suffix minimum (the rings drop tokens below a block's first for good; the
// keys widened to 16 rows start in order for every causal mask, P and block length checked, and
// the minimum keeps the rings right regardless), and the most tokens one block reads.
struct BlockTokens {
  std::vector<int64_t> first, last;
  std::vector<char> any;
  int64_t span = 0;
  BlockTokens(const Band& band, int64_t N, int64_t T, int64_t P) {
    const int64_t n_blocks = (N + T - 1) / T;
    first.assign(n_blocks, N);
    last.assign(n_blocks, 0);
    any.assign(n_blocks, 0);
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      int64_t k0, k1;
      if (block_keys(band, blk * T * P, std::min(T, N - blk * T) * P, k0, k1)) {
        first[blk] = k0 / P;
        last[blk] = (k1 + P - 1) / P;
        any[blk] = 1;
      }
    }
    for (int64_t blk = n_blocks - 2; blk >= 0; --blk) {
      first[blk] = std::min(first[blk], first[blk + 1]);
    }
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      if (any[blk]) span = std::max(span, last[blk] - first[blk]);
    }
  }
};

// Sizes of a fused window call: xq (B, M, N, d), alpha_q (M, H, P), xk (B, Mk, N, d),
// alpha_k (Mk, G, P), xv (B, Mk, N, dv); blocks of T tokens; rings of cap tokens.
struct WindowDims {
  int64_t B, M, N, d, H, Mk, G, P, Lq, dv, HP, T, n_blocks;
  WindowDims(const at::Tensor& xq, const at::Tensor& alpha_q, const at::Tensor& xk,
             const at::Tensor& alpha_k, const at::Tensor& xv, int64_t block)
      : B(xq.size(0)), M(xq.size(1)), N(xq.size(2)), d(xq.size(3)), H(alpha_q.size(1)),
        Mk(xk.size(1)), G(alpha_k.size(1)), P(alpha_q.size(2)), Lq(N * P), dv(xv.size(3)),
        HP(H * P), T(block / P), n_blocks((N + T - 1) / T) {}
  // Ring capacity: a block's span and 8 blocks more, so that moving the rows still needed to
  // the front happens every 8 blocks. Measured at N = 2048, P = 4, W = 64, 1 thread: window core
  // / MHA about 1.12 with 4 blocks more, 1.09-1.10 with 8 or 10, 1.12 with 16, 1.23 with 64 or
  // more (longer rings leave the cache).
  int64_t cap(const BlockTokens& keys) const { return std::min(N, keys.span + 8 * T); }
};

// Runs body(begin, end) on the task indices [0, B * n_blocks) (batch * n_blocks + block), cut
// into one contiguous range per thread of about equal work, a block's work taken as the key
// tokens it reads plus its own tokens (their mixing): the first blocks of a sequence, whose
// windows are cut short, count less. at::parallel_for's equal ranges left the thread with the
// sequence's start short of work.
template <typename F>
void window_parallel(int64_t B, int64_t n_blocks, int64_t T, const BlockTokens& keys,
                     const F& body) {
  const int64_t n = B * n_blocks;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  std::vector<int64_t> before(n + 1, 0);  // work of tasks [0, t)
  for (int64_t t = 0; t < n; ++t) {
    const int64_t blk = t % n_blocks;
    before[t + 1] = before[t] + T + (keys.any[blk] ? keys.last[blk] - keys.first[blk] : 0);
  }
  std::vector<int64_t> bounds(parts + 1, n);
  bounds[0] = 0;
  for (int64_t k = 1, t = 0; k < parts; ++k) {
    while (t < n && before[t] * parts < before[n] * k) ++t;
    bounds[k] = t;
  }
  at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      if (bounds[p] < bounds[p + 1]) body(bounds[p], bounds[p + 1]);
    }
  });
}

// A thread runs its range of blocks in chunks of up to kChunkBlocks consecutive blocks of one
// batch, head by head: every block of the chunk for head 0, then for head 1, and so on. The
// chunk's blocks read mostly the same key and value rows of a head, which then stay in the
// core's cache from block to block; block by block with all heads inside, the other heads' rows
// (and gradient rows) pushed them out in between. The collapse and the query gradient's gather
// take the chunk's output and gradient rows of all heads, so they run once the chunk's last head
// is done. A chunk's key tokens [first, last) fit the rings (a chunk ends early otherwise).
// Measured at N = 2048, P = 4, W = 64, H = 8, d = 64, 1 thread (ops called directly, alternating
// processes): forward + backward about 4 ms less with 4 blocks than block by block, 2 and 8
// blocks no clearer (docs/benchmarks.md).
constexpr int64_t kChunkBlocks = 4;

struct Chunk {
  int64_t b, blk0, blk1, n0, n1, first, last;
  bool any;
};

// The chunk starting at task index `task` (batch * n_blocks + block) of a range ending at end.
inline Chunk next_chunk(int64_t task, int64_t end, int64_t n_blocks, int64_t N, int64_t T,
                        const BlockTokens& keys, int64_t cap) {
  Chunk c{task / n_blocks, task % n_blocks, 0, 0, 0, N, 0, false};
  const int64_t limit = std::min({end - task, n_blocks - c.blk0, kChunkBlocks});
  c.blk1 = c.blk0;
  for (int64_t i = 0; i < limit; ++i) {
    const int64_t blk = c.blk0 + i;
    if (keys.any[blk]) {
      const int64_t first = std::min(c.first, keys.first[blk]);
      const int64_t last = std::max(c.last, keys.last[blk]);
      if (c.any && last - first > cap) break;
      c.first = first;
      c.last = last;
      c.any = true;
    }
    c.blk1 = blk + 1;
  }
  c.n0 = c.blk0 * T;
  c.n1 = std::min(N, c.blk1 * T);
  return c;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fused_window_forward(
    const at::Tensor& xq, const at::Tensor& alpha_q, const at::Tensor& xk,
    const at::Tensor& alpha_k, const at::Tensor& xv, const at::Tensor& alpha_v,
    const std::optional<at::Tensor>& cos, const std::optional<at::Tensor>& sin,
    const std::optional<at::Tensor>& key_valid, const at::Tensor& R, int64_t mode, int64_t P,
    int64_t window, double scale_d, int64_t block) {
  check_window(xq, alpha_q, xk, alpha_k, xv, alpha_v, cos, sin, key_valid, R, mode, P, window,
               block);
  const WindowDims z(xq, alpha_q, xk, alpha_k, xv, block);
  const int64_t B = z.B, M = z.M, N = z.N, d = z.d, H = z.H, Mk = z.Mk, G = z.G, Lq = z.Lq;
  const int64_t dv = z.dv, HP = z.HP, T = z.T, n_blocks = z.n_blocks;
  auto o = pooled_empty({B, H, Lq, dv}, xq.options());
  auto lse = at::empty({B, H, Lq}, xq.options());
  auto y = pooled_empty({B, H, N, dv}, xq.options());
  const Band band{mode, P, window, Lq, Lq};
  const BlockTokens keys(band, N, T, P);
  const int64_t cap = z.cap(keys);
  const bool* valid_all = key_valid.has_value() ? key_valid->data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(xq.scalar_type(), "fused_window_forward", [&] {
    const scalar_t scale = static_cast<scalar_t>(scale_d);
    const FusedInputs<scalar_t> in(xq, alpha_q, cos, sin, xk, xv, R);
    const scalar_t *xp = in.xp, *ap = in.ap, *cp = in.cp, *sp = in.sp, *kxp = in.kp, *vxp = in.vp;
    const scalar_t* rp = in.rp;
    const scalar_t* akp = alpha_k.data_ptr<scalar_t>();
    const scalar_t* avp = alpha_v.data_ptr<scalar_t>();
    scalar_t* op = o.data_ptr<scalar_t>();
    scalar_t* lp = lse.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    window_parallel(B, n_blocks, T, keys, [&](int64_t begin, int64_t end) {
      Ring<scalar_t> kr(0, G, P, d, cap, tile_tokens(d), false);
      Ring<scalar_t> vr(3, G, P, dv, cap, tile_tokens(dv), false);
      std::vector<scalar_t> qblk(block * d), omix(HP * kChunkBlocks * T * dv), row(d), scores;
      Panels<scalar_t> kpan;
      for (int64_t task = begin; task < end;) {
        const Chunk c = next_chunk(task, end, n_blocks, N, T, keys, cap);
        task += c.blk1 - c.blk0;
        const int64_t b = c.b, wc = (c.n1 - c.n0) * dv;
        const bool* valid = valid_all == nullptr ? nullptr : valid_all + b * Lq;
        if (c.any) {
          kr.hold(b, c.first, c.last, kxp + b * Mk * N * d, Mk, N, akp, cp, sp);
          vr.hold(b, c.first, c.last, vxp + b * Mk * N * dv, Mk, N, avp, nullptr, nullptr);
        }
        const bool packed = use_panels<scalar_t>() && c.any;
        for (int64_t h = 0; h < H; ++h) {
          const int64_t g = h / (H / G);
          if (packed && (h == 0 || g != (h - 1) / (H / G))) {  // the chunk's keys of kv head g
            kpan.pack(kr.head(g) + (c.first * P - kr.first_row()) * d, c.first * P,
                      (c.last - c.first) * P, d);
          }
          for (int64_t blk = c.blk0; blk < c.blk1; ++blk) {
            const int64_t n0 = blk * T, nt = std::min(T, N - n0), i0 = n0 * P, rows = nt * P;
            mix_rows(xp + (b * M * N + n0) * d, N * d, M, ap + h * P, HP, 1, P, nt, d, cp, sp,
                     i0, qblk.data(), 0, row.data());
            scalar_t* ob = op + ((b * H + h) * Lq + i0) * dv;
            block_forward<scalar_t>(qblk.data(), kr.head(g), vr.head(g), kr.first_row(), valid,
                                    band, i0, rows, d, dv, scale, scores, ob,
                                    lp + (b * H + h) * Lq + i0, packed ? &kpan : nullptr);
            // omix (HP, chunk tokens * dv): the output rows grouped by (head, p)
            rows_to_grouped(ob, omix.data() + h * P * wc + (n0 - c.n0) * dv, wc, nt, P, dv);
          }
        }
        // y of the chunk's tokens (H, tokens * dv) = R (H, HP) omix
        gemm(false, false, H, wc, HP, scalar_t(1), rp, HP, omix.data(), wc, scalar_t(0),
             yp + (b * H * N + c.n0) * dv, N * dv);
      }
    });
  });
  return {y, o, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
fused_window_backward(const at::Tensor& grad, const at::Tensor& xq, const at::Tensor& alpha_q,
                      const at::Tensor& xk, const at::Tensor& alpha_k, const at::Tensor& xv,
                      const at::Tensor& alpha_v, const std::optional<at::Tensor>& cos,
                      const std::optional<at::Tensor>& sin, const at::Tensor& o,
                      const at::Tensor& lse, const std::optional<at::Tensor>& key_valid,
                      const at::Tensor& R, int64_t mode, int64_t P, int64_t window,
                      double scale_d, int64_t block) {
  check_window(xq, alpha_q, xk, alpha_k, xv, alpha_v, cos, sin, key_valid, R, mode, P, window,
               block);
  const WindowDims z(xq, alpha_q, xk, alpha_k, xv, block);
  const int64_t B = z.B, M = z.M, N = z.N, d = z.d, H = z.H, Mk = z.Mk, G = z.G, Lq = z.Lq;
  const int64_t dv = z.dv, HP = z.HP, T = z.T, n_blocks = z.n_blocks;
  TORCH_CHECK(grad.is_contiguous() && grad.sizes() == at::IntArrayRef({B, H, N, dv}) &&
                  o.is_contiguous() && o.sizes() == at::IntArrayRef({B, H, Lq, dv}) &&
                  lse.is_contiguous() && lse.sizes() == at::IntArrayRef({B, H, Lq}),
              "fused window IHA: contiguous grad (B, H, N, dv), o (B, H, N*P, dv), "
              "lse (B, H, N*P)");
  auto dxq = pooled_empty({B, M, N, d}, xq.options());
  auto dxk = pooled_empty({B, Mk, N, d}, xq.options());
  auto dxv = pooled_empty({B, Mk, N, dv}, xq.options());
  const auto wide = xq.options().dtype(at::kDouble);
  auto gaq = at::zeros({M, H, P}, wide), gak = at::zeros({Mk, G, P}, wide);
  auto gav = at::zeros({Mk, G, P}, wide), dR = at::zeros({H, H, P}, wide);
  const Band band{mode, P, window, Lq, Lq};
  const BlockTokens keys(band, N, T, P);
  const int64_t cap = z.cap(keys);
  const bool* valid_all = key_valid.has_value() ? key_valid->data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES(xq.scalar_type(), "fused_window_backward", [&] {
    const scalar_t scale = static_cast<scalar_t>(scale_d);
    const FusedInputs<scalar_t> in(xq, alpha_q, cos, sin, xk, xv, R);
    const scalar_t *xp = in.xp, *ap = in.ap, *cp = in.cp, *sp = in.sp, *kxp = in.kp, *vxp = in.vp;
    const scalar_t* rp = in.rp;
    const scalar_t* akp = alpha_k.data_ptr<scalar_t>();
    const scalar_t* avp = alpha_v.data_ptr<scalar_t>();
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    const scalar_t* op = o.data_ptr<scalar_t>();
    const scalar_t* lp = lse.data_ptr<scalar_t>();
    scalar_t* dxqp = dxq.data_ptr<scalar_t>();
    scalar_t* dxkp = dxk.data_ptr<scalar_t>();
    scalar_t* dxvp = dxv.data_ptr<scalar_t>();
    // Key tokens [lo, hi) of batch b that a thread's first blocks add to, owned by the thread
    // before it: their gathered gradients, (Mk, hi - lo, d) and (Mk, hi - lo, dv).
    struct Halo {
      int64_t b = -1, lo = 0, hi = 0;
      std::vector<scalar_t> k, v;
    };
    std::vector<Halo> halos;
    std::mutex lock;
    window_parallel(B, n_blocks, T, keys, [&](int64_t begin, int64_t end) {
      Ring<scalar_t> kr(0, G, P, d, cap, tile_tokens(d), true);
      Ring<scalar_t> vr(3, G, P, dv, cap, tile_tokens(dv), true);
      BlockGrad<scalar_t> work;
      work.accumulate();
      std::vector<scalar_t> omix(HP * kChunkBlocks * T * dv), row(d);
      std::vector<scalar_t> qblk(block * d), gblk(block * dv), dqrows(block * d);
      std::vector<scalar_t> dqbuf(HP * kChunkBlocks * T * d), tmp, rtile(H * HP);
      std::vector<double> pq(M * HP, 0.0), pk(Mk * G * P, 0.0), pv(Mk * G * P, 0.0);
      std::vector<double> pr(H * HP, 0.0);
      Panels<scalar_t> kpan, vpan;
      Halo halo;
      int64_t cur_b = -1, own_lo = 0, own_hi = 0, done = 0;
      // Gathers the key and value gradients of tokens [done, upto) of batch cur_b: below own_lo
      // into the halo, from it on into dxk and dxv.
      auto gather_keys = [&](int64_t upto) {
        const int64_t b = cur_b, split = std::min(std::max(done, own_lo), upto);
        const scalar_t* kx = kxp + b * Mk * N * d;
        const scalar_t* vx = vxp + b * Mk * N * dv;
        if (split > done) {
          const int64_t width = halo.hi - halo.lo;
          kr.gather(done, split, kx, Mk, N, akp, cp, sp, halo.k.data(), halo.lo, width * d, tmp,
                    pk);
          vr.gather(done, split, vx, Mk, N, avp, nullptr, nullptr, halo.v.data(), halo.lo,
                    width * dv, tmp, pv);
        }
        if (upto > split) {
          kr.gather(split, upto, kx, Mk, N, akp, cp, sp, dxkp + b * Mk * N * d, 0, N * d, tmp,
                    pk);
          vr.gather(split, upto, vx, Mk, N, avp, nullptr, nullptr, dxvp + b * Mk * N * dv, 0,
                    N * dv, tmp, pv);
        }
        done = std::max(done, upto);
      };
      for (int64_t task = begin; task < end;) {
        const Chunk c = next_chunk(task, end, n_blocks, N, T, keys, cap);
        task += c.blk1 - c.blk0;
        const int64_t b = c.b, wc = (c.n1 - c.n0) * dv, wq = (c.n1 - c.n0) * d;
        const bool* valid = valid_all == nullptr ? nullptr : valid_all + b * Lq;
        const scalar_t* gy = gp + b * H * N * dv;
        if (b != cur_b) {
          if (cur_b >= 0) gather_keys(own_hi);
          cur_b = b;
          own_lo = c.n0;
          done = std::min(keys.first[c.blk0], c.n0);
          if (done < own_lo) {
            halo.b = b;
            halo.lo = done;
            halo.hi = own_lo;
            halo.k.assign(Mk * (own_lo - done) * d, scalar_t(0));
            halo.v.assign(Mk * (own_lo - done) * dv, scalar_t(0));
          }
        }
        own_hi = c.n1;  // held tokens past the thread's own (keys widened to 16 rows) get
                        // no gradient from it: the thread they belong to writes them
        if (c.any) {
          gather_keys(c.first);  // no later block reads tokens below the chunk's first
          kr.hold(b, c.first, c.last, kxp + b * Mk * N * d, Mk, N, akp, cp, sp);
          vr.hold(b, c.first, c.last, vxp + b * Mk * N * dv, Mk, N, avp, nullptr, nullptr);
        }
        // per head and block: its o rows grouped for dR, its query rows and output-gradient
        // rows (the collapse's backward: dO = R^T grad_y) recomputed, the block's gradients,
        // and its dq rows through RoPE^T into dqbuf (HP, chunk tokens * d) for the gather below
        const bool packed = use_panels<scalar_t>() && c.any;
        for (int64_t h = 0; h < H; ++h) {
          const int64_t g = h / (H / G);
          if (packed && (h == 0 || g != (h - 1) / (H / G))) {  // the chunk's keys and values
            const int64_t first = c.first * P, n = (c.last - c.first) * P;
            kpan.pack(kr.head(g) + (first - kr.first_row()) * d, first, n, d);
            vpan.pack(vr.head(g) + (first - vr.first_row()) * dv, first, n, dv);
          }
          for (int64_t blk = c.blk0; blk < c.blk1; ++blk) {
            const int64_t n0 = blk * T, nt = std::min(T, N - n0), i0 = n0 * P, rows = nt * P;
            const scalar_t* ob = op + ((b * H + h) * Lq + i0) * dv;
            rows_to_grouped(ob, omix.data() + h * P * wc + (n0 - c.n0) * dv, wc, nt, P, dv);
            mix_rows(xp + (b * M * N + n0) * d, N * d, M, ap + h * P, HP, 1, P, nt, d, cp, sp,
                     i0, qblk.data(), 0, row.data());
            mix_rows<scalar_t>(gy + n0 * dv, N * dv, H, rp + h * P, HP, 1, P, nt, dv, nullptr,
                               nullptr, i0, gblk.data(), 0, nullptr);
            work.run(qblk.data(), gblk.data(), ob, lp + (b * H + h) * Lq + i0, kr.head(g),
                     vr.head(g), kr.first_row(), valid, band, i0, rows, d, dv, scale,
                     dqrows.data(), kr.grad_head(g), vr.grad_head(g), packed ? &kpan : nullptr,
                     packed ? &vpan : nullptr);
            for (int64_t t = 0; t < nt; ++t) {
              for (int64_t p = 0; p < P; ++p) {
                rotate_into(dqbuf.data() + (h * P + p) * wq + (n0 - c.n0 + t) * d,
                            dqrows.data() + (t * P + p) * d, cp, sp, i0 + t * P + p, d, true);
              }
            }
          }
        }
        // block by block (float32 sums over a block's tokens, then double): dR (H, HP) +=
        // grad_y (H, tokens * dv) omix^T, and the query gradient's gather
        for (int64_t n0 = c.n0; n0 < c.n1; n0 += T) {
          const int64_t nt = std::min(T, N - n0), off = n0 - c.n0;
          gemm(false, true, H, HP, nt * dv, scalar_t(1), gy + n0 * dv, N * dv,
               omix.data() + off * dv, wc, scalar_t(0), rtile.data(), HP);
          for (int64_t i = 0; i < H * HP; ++i) pr[i] += rtile[i];
          gather_tile(dqbuf.data() + off * d, nt * d, ap, M, HP, xp + (b * M * N + n0) * d,
                      N * d, dxqp + (b * M * N + n0) * d, N * d, tmp, pq, wq);
        }
      }
      if (cur_b >= 0) gather_keys(own_hi);
      std::lock_guard<std::mutex> guard(lock);
      auto add = [](double* out, const std::vector<double>& part) {
        for (size_t i = 0; i < part.size(); ++i) out[i] += part[i];
      };
      add(gaq.data_ptr<double>(), pq);
      add(gak.data_ptr<double>(), pk);
      add(gav.data_ptr<double>(), pv);
      add(dR.data_ptr<double>(), pr);
      if (halo.b >= 0) halos.push_back(std::move(halo));
    });
    for (const Halo& part : halos) {  // the other threads' additions to each thread's tokens
      const int64_t width = part.hi - part.lo;
      for (int64_t m = 0; m < Mk; ++m) {
        scalar_t* gk = dxkp + ((part.b * Mk + m) * N + part.lo) * d;
        scalar_t* gv = dxvp + ((part.b * Mk + m) * N + part.lo) * dv;
        const scalar_t* hk = part.k.data() + m * width * d;
        const scalar_t* hv = part.v.data() + m * width * dv;
        for (int64_t i = 0; i < width * d; ++i) gk[i] += hk[i];
        for (int64_t i = 0; i < width * dv; ++i) gv[i] += hv[i];
      }
    }
  });
  const auto dtype = xq.scalar_type();
  return {dxq, gaq.to(dtype), dxk, gak.to(dtype), dxv, gav.to(dtype), dR.to(dtype)};
}

int64_t pool_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= -1, "pool_limit: bytes must be >= 0 (-1: only read the limit)");
  return bytes < 0 ? Pool::get().limit() : Pool::get().set_limit(bytes);
}

int64_t pool_cached() { return Pool::get().cached(); }

// The float32 exp the softmax uses, elementwise (tests compare it with float64).
at::Tensor softmax_exp(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "softmax_exp: a contiguous float32 CPU tensor");
  auto y = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t n = x.numel();
  std::copy_n(xp, n, yp);
  exp_shifted<float>(yp, n, 0.0f);
  return y;
}

}  // namespace

TORCH_LIBRARY(iha_band, m) {
  m.def(
      "forward(Tensor q, Tensor k, Tensor v, Tensor? key_valid, int mode, int P, int window, "
      "float scale, int block) -> (Tensor, Tensor)");
  m.def(
      "backward(Tensor grad, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor? key_valid, int mode, int P, int window, float scale, int block) -> "
      "(Tensor, Tensor, Tensor)");
  m.def("spread(Tensor x, Tensor alpha, Tensor? cos, Tensor? sin) -> Tensor");
  m.def("pool_limit(int bytes) -> int", &pool_limit);
  m.def("pool_cached() -> int", &pool_cached);
  m.def("softmax_exp(Tensor x) -> Tensor", &softmax_exp);
  m.def(
      "gather(Tensor g, Tensor alpha, Tensor? x, Tensor? cos, Tensor? sin, bool want_gx=True) -> "
      "(Tensor, Tensor)");
  m.def(
      "fused_forward(Tensor xq, Tensor alpha_q, Tensor? cos, Tensor? sin, Tensor kt, Tensor vt, "
      "Tensor? key_valid, Tensor R, int mode, int P, int window, float scale, int block) -> "
      "(Tensor, Tensor, Tensor)");
  m.def(
      "fused_backward(Tensor grad, Tensor xq, Tensor alpha_q, Tensor? cos, Tensor? sin, "
      "Tensor kt, Tensor vt, Tensor o, Tensor lse, Tensor? key_valid, Tensor R, int mode, int P, "
      "int window, float scale, int block) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "fused_window_forward(Tensor xq, Tensor alpha_q, Tensor xk, Tensor alpha_k, Tensor xv, "
      "Tensor alpha_v, Tensor? cos, Tensor? sin, Tensor? key_valid, Tensor R, int mode, int P, "
      "int window, float scale, int block) -> (Tensor, Tensor, Tensor)");
  m.def(
      "fused_window_backward(Tensor grad, Tensor xq, Tensor alpha_q, Tensor xk, Tensor alpha_k, "
      "Tensor xv, Tensor alpha_v, Tensor? cos, Tensor? sin, Tensor o, Tensor lse, "
      "Tensor? key_valid, Tensor R, int mode, int P, int window, float scale, int block) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(iha_band, CPU, m) {
  m.impl("forward", &band_forward);
  m.impl("backward", &band_backward);
  m.impl("spread", &mix_spread);
  m.impl("gather", &mix_gather);
  m.impl("fused_forward", &fused_forward);
  m.impl("fused_backward", &fused_backward);
  m.impl("fused_window_forward", &fused_window_forward);
  m.impl("fused_window_backward", &fused_window_backward);
}
