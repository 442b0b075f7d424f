/* Flag bytes (counts, gains), masked weight writes and block flags spread over their
 * elements, ranked inside pruned blocks (native.py). */
#include <math.h>
#include <string.h>

#include "kernels.h"

#ifdef FSP_X86
#include <immintrin.h>
#endif

typedef struct {
    const uint8_t *a, *b;
    void *w;
    int64_t n, dbl, result;
    int64_t *stop; /* searches: set once one task has found its answer, the others stop */
} fsp_range;

enum { STOP_CHECK = 1 << 14 }; /* bytes a search reads between looks at ``stop`` */

/* One task of run_items: [first, last) of the concatenation of ``count`` items (item k:
 * ns[k] bytes at as[k], bs[k] and weights at ws[k]; bs or ws may be NULL), run as one
 * range of ``fn`` within each item it meets; ``result`` sums theirs. */
typedef struct {
    fsp_work fn;
    const uint8_t *const *as, *const *bs;
    void *const *ws;
    const int64_t *ns;
    int64_t count, dbl, first, last, result;
    int64_t *stop;
} fsp_span;

static void run_span(void *arg, int64_t worker) {
    fsp_span *t = (fsp_span *)arg;
    int64_t base = 0;
    for (int64_t k = 0; k < t->count && base < t->last; base += t->ns[k], k++) {
        int64_t s0 = t->first > base ? t->first - base : 0;
        int64_t s1 = t->last - base < t->ns[k] ? t->last - base : t->ns[k];
        if (s0 >= s1) continue;
        fsp_range r = {t->as[k] + s0, t->bs ? t->bs[k] + s0 : NULL,
                       t->ws ? (char *)t->ws[k] + (size_t)s0 * (t->dbl ? 8 : 4) : NULL,
                       s1 - s0, t->dbl, 0, t->stop};
        t->fn(&r, worker);
        t->result += r.result;
        if (t->stop && __atomic_load_n(t->stop, __ATOMIC_RELAXED)) return;
    }
}

/* ``fn`` over ``count`` items on ``threads`` threads, split into tasks as one range of
 * their total would be (so many small items share the threads as one large one would);
 * returns the sum of the ranges' results. ``stop``: searches (NULL otherwise). */
static int64_t run_items(fsp_work fn, const uint8_t *const *as, const uint8_t *const *bs,
                         void *const *ws, const int64_t *ns, int64_t count, int64_t dbl,
                         int64_t threads, int64_t *stop) {
    int64_t total = 0, sum = 0;
    for (int64_t k = 0; k < count; k++) total += ns[k];
    int64_t tasks = task_count(total, total, threads);
    fsp_span parts[MAX_TASKS];
    for (int64_t t = 0; t < tasks; t++)
        parts[t] = (fsp_span){fn, as, bs, ws, ns, count, dbl, part_start(total, t, tasks),
                              part_start(total, t + 1, tasks), 0, stop};
    run_all(run_span, parts, sizeof(fsp_span), tasks, threads);
    for (int64_t t = 0; t < tasks; t++) sum += parts[t].result;
    return sum;
}

static void run_count(void *arg, int64_t worker) {
    (void)worker;
    fsp_range *r = (fsp_range *)arg;
    int64_t total = 0, i = 0;
    for (; i + 8 * 255 <= r->n; i += 8 * 255) { /* byte lanes of 255 words stay below 256 */
        uint64_t lanes = 0;
        for (int64_t j = 0; j < 8 * 255; j += 8) {
            uint64_t word;
            memcpy(&word, r->a + i + j, 8);
            lanes += word & 0x0101010101010101ull;
        }
        for (int b = 0; b < 8; b++) total += (int64_t)((lanes >> (8 * b)) & 0xff);
    }
    for (; i < r->n; i++) total += r->a[i] != 0;
    r->result = total;
}

/* Number of nonzero bytes of ``count`` flag arrays (bool tensors'; item k: ns[k] bytes at
 * flags[k]), in one run over them all. */
int64_t fsp_count_true(const uint8_t *const *flags, const int64_t *ns, int64_t count,
                       int64_t threads) {
    return run_items(run_count, flags, NULL, NULL, ns, count, 0, threads, NULL);
}

/* A found answer: this task's result, and every other task stops at its next look. */
static void found(fsp_range *r) {
    r->result = 1;
    __atomic_store_n(r->stop, 1, __ATOMIC_RELAXED);
}

static int stopped(const fsp_range *r, int64_t i) {
    return i % STOP_CHECK == 0 && __atomic_load_n(r->stop, __ATOMIC_RELAXED);
}

static void run_gains(void *arg, int64_t worker) {
    (void)worker;
    fsp_range *r = (fsp_range *)arg;
    int64_t i = 0;
    for (; i + 64 <= r->n; i += 64) {
        if (stopped(r, i)) return;
        uint64_t acc = 0;
        for (int j = 0; j < 64; j += 8) {
            uint64_t old, new_;
            memcpy(&old, r->a + i + j, 8);
            memcpy(&new_, r->b + i + j, 8);
            acc |= new_ & ~old;
        }
        if (acc) {
            found(r);
            return;
        }
    }
    for (; i < r->n; i++)
        if (r->b[i] && !r->a[i]) {
            found(r);
            return;
        }
}

/* 1 if ``new_[k]`` is set somewhere ``old[k]`` is not (bool bytes, ns[k] of each) for some
 * of the ``count`` pairs, else 0: one search over them all, stopped once a task finds one. */
int64_t fsp_gains(const uint8_t *const *old, const uint8_t *const *new_, const int64_t *ns,
                  int64_t count, int64_t threads) {
    int64_t stop = 0;
    return run_items(run_gains, old, new_, NULL, ns, count, 0, threads, &stop) > 0;
}

static void run_any_false(void *arg, int64_t worker) {
    (void)worker;
    fsp_range *r = (fsp_range *)arg;
    const uint64_t ones = 0x0101010101010101ull; /* eight set bool bytes */
    int64_t i = 0;
    for (; i + 64 <= r->n; i += 64) {
        if (stopped(r, i)) return;
        uint64_t acc = ones;
        for (int j = 0; j < 64; j += 8) {
            uint64_t word;
            memcpy(&word, r->a + i + j, 8);
            acc &= word;
        }
        if (acc != ones) {
            found(r);
            return;
        }
    }
    for (; i < r->n; i++)
        if (!r->a[i]) {
            found(r);
            return;
        }
}

/* 1 if some byte of ``flags`` (bool bytes) is 0, else 0: it stops at the first it finds,
 * so a mask that prunes anything costs almost nothing. */
int64_t fsp_any_false(const uint8_t *flags, int64_t n, int64_t threads) {
    int64_t stop = 0;
    return run_items(run_any_false, &flags, NULL, NULL, &n, 1, 0, threads, &stop) > 0;
}

/* w[i] *= keep[i] (as 0 or 1), written only where that changes w's bits: the same values
 * as torch's ``w.mul_(keep.to(w.dtype))``, with no write where the weight is kept or
 * already zero. Blocks of B: multiply into a buffer, compare bits, copy back if any. */
#define ZERO_ONE(T, U)                                                                      \
    static inline void zero_one_##T(T *w, uint8_t keep) {                                   \
        T r = *w * (T)(int)(keep & 1);                                                        \
        U a, b;                                                                             \
        memcpy(&a, w, sizeof a);                                                            \
        memcpy(&b, &r, sizeof b);                                                           \
        if (a != b) *w = r;                                                                 \
    }
ZERO_ONE(float, uint32_t)
ZERO_ONE(double, uint64_t)
#define ZERO_RANGE(T, U, NAME)                                                              \
    static void NAME(T *w, const uint8_t *keep, int64_t n) {                                \
        int64_t i = 0;                                                                      \
        for (; i + 8 <= n; i += 8) {                                                        \
            uint64_t bytes;                                                                 \
            memcpy(&bytes, keep + i, 8);                                                    \
            if (bytes == 0x0101010101010101ull) continue; /* all kept: w * 1 is w */        \
            for (int64_t j = i; j < i + 8; j++) zero_one_##T(w + j, keep[j]);               \
        }                                                                                   \
        for (; i < n; i++) zero_one_##T(w + i, keep[i]);                                    \
    }
ZERO_RANGE(float, uint32_t, zero_float)
ZERO_RANGE(double, uint64_t, zero_double)

#ifdef FSP_X86
/* float32 on AVX2: 8 weights a step, stored only when their bits change. */
__attribute__((target("avx2"))) static void zero_avx2(float *w, const uint8_t *keep, int64_t n) {
    const __m256i none = _mm256_setzero_si256();
    const __m256 ones = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        if (!(i & 15)) ahead(w + i);
        if (!(i & 63)) ahead(keep + i);
        uint64_t bytes;
        memcpy(&bytes, keep + i, 8);
        if (bytes == 0x0101010101010101ull) continue; /* all kept: w * 1 is w */
        __m256i k = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)bytes));
        __m256 factor = _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(k, none)), ones);
        __m256 v = _mm256_loadu_ps(w + i), r = _mm256_mul_ps(v, factor);
        __m256i diff = _mm256_xor_si256(_mm256_castps_si256(v), _mm256_castps_si256(r));
        if (!_mm256_testz_si256(diff, diff)) _mm256_storeu_ps(w + i, r);
    }
    if (i < n) zero_float(w + i, keep + i, n - i);
}
#endif

static void run_zero(void *arg, int64_t worker) {
    (void)worker;
    fsp_range *r = (fsp_range *)arg;
    if (r->dbl) {
        zero_double((double *)r->w, r->a, r->n);
        return;
    }
#ifdef FSP_X86
    if (__builtin_cpu_supports("avx2")) {
        zero_avx2((float *)r->w, r->a, r->n);
        return;
    }
#endif
    zero_float((float *)r->w, r->a, r->n);
}

/* The write above on each of ``count`` (w[k], keep[k]) pairs of ns[k] weights (all float32,
 * or all float64): one run on ``threads`` threads over their concatenation, so many small
 * weights cost one pass (a call per weight left most of them on one thread). */
void fsp_zero_pruned(void *const *ws, const uint8_t *const *keeps, const int64_t *ns,
                     int64_t count, int64_t dbl, int64_t threads) {
    run_items(run_zero, keeps, NULL, ws, ns, count, dbl, threads, NULL);
}

/* ---- spreading block flags over their elements ----------------------------------------- */

typedef struct {
    const uint8_t *keep;
    uint8_t *out;
    int64_t blocks, width;
    const void *x; /* ranked: the data, whose |x| (or x * x, l2) ranks a pruned block */
    int64_t dbl, l2, zeros;
} fsp_spread_range;

/* Pruned blocks of width W lose their ``zeros`` smallest scores, ties by position: element
 * j stays iff #{i < j: s_i <= s_j} + #{i > j: s_i < s_j} >= zeros (block_write.py's rank). */
#define RANKED(T, ABSF, W)                                                                  \
    static void ranked_##T##_##W(const fsp_spread_range *r, int64_t first) {               \
        const T *x = (const T *)r->x;                                                       \
        for (int64_t b = first; b < r->blocks; b++) {                                       \
            uint8_t *o = r->out + b * W;                                                    \
            if (r->keep[b]) {                                                               \
                memset(o, 1, W);                                                            \
                continue;                                                                   \
            }                                                                               \
            T s[W];                                                                         \
            for (int j = 0; j < W; j++) {                                                   \
                T v = x[b * W + j];                                                         \
                s[j] = r->l2 ? v * v : ABSF(v);                                             \
            }                                                                               \
            for (int j = 0; j < W; j++) {                                                   \
                int64_t rank = 0;                                                           \
                for (int i = 0; i < j; i++) rank += s[i] <= s[j];                           \
                for (int i = j + 1; i < W; i++) rank += s[i] < s[j];                        \
                o[j] = rank >= r->zeros;                                                    \
            }                                                                               \
        }                                                                                   \
    }

#define RANKED_WIDTHS(T, ABSF) RANKED(T, ABSF, 2) RANKED(T, ABSF, 4) RANKED(T, ABSF, 8)     \
    RANKED(T, ABSF, 16)
RANKED_WIDTHS(float, fabsf)
RANKED_WIDTHS(double, fabs)

#ifdef FSP_X86
/* float32 blocks of 4 on AVX2, 8 blocks a step, with no branch: the 4 x 8 transpose of
 * block4_scores puts element j of 8 blocks in one vector, pruned_words4 ranks them, and
 * a kept block's word is all ones. Returns the blocks done (a multiple of 8). */
__attribute__((target("avx2"))) static int64_t ranked4_avx2(const fsp_spread_range *r) {
    const float *x = (const float *)r->x;
    const __m256i ones = _mm256_set1_epi32(0x01010101);
    int64_t b = 0;
    for (; b + 8 <= r->blocks; b += 8) {
        __m256 e[4];
        block4_scores(x + 4 * b, (int)r->l2, e);
        uint64_t k8;
        memcpy(&k8, r->keep + b, 8);
        __m256i kept = _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)k8)),
                                          ones);
        _mm256_storeu_si256((__m256i *)(r->out + 4 * b),
                            _mm256_or_si256(pruned_words4(e, r->zeros), kept));
    }
    return b;
}
#endif

static int spread_ranked(const fsp_spread_range *r) {
#ifdef FSP_X86
    if (!r->dbl && r->width == 4 && __builtin_cpu_supports("avx2")) {
        ranked_float_4(r, ranked4_avx2(r));
        return 1;
    }
#endif
#define CASE(W)                                                                             \
    case W:                                                                                 \
        if (r->dbl)                                                                         \
            ranked_double_##W(r, 0);                                                        \
        else                                                                                \
            ranked_float_##W(r, 0);                                                         \
        return 1;
    switch (r->width) {
        CASE(2)
        CASE(4)
        CASE(8)
        CASE(16)
    }
#undef CASE
    return 0;
}

void spread_blocks(const uint8_t *keep, int64_t blocks, int64_t width, uint8_t *out,
                   const void *x, int64_t dbl, int64_t l2, int64_t zeros) {
    const fsp_spread_range whole = {keep, out, blocks, width, x, dbl, l2, zeros};
    if (x && zeros < width && spread_ranked(&whole)) return;
    if (width == 4) { /* one 32-bit store per block: its flag in every byte */
        for (int64_t b = 0; b < blocks; b++) {
            uint32_t word = (uint32_t)keep[b] * 0x01010101u;
            memcpy(out + 4 * b, &word, 4);
        }
    } else if (width == 8) {
        for (int64_t b = 0; b < blocks; b++) {
            uint64_t word = (uint64_t)keep[b] * 0x0101010101010101ull;
            memcpy(out + 8 * b, &word, 8);
        }
    } else {
        for (int64_t b = 0; b < blocks; b++) memset(out + b * width, keep[b], (size_t)width);
    }
}

static void run_spread(void *arg, int64_t worker) {
    (void)worker;
    const fsp_spread_range *r = (const fsp_spread_range *)arg;
    populate_fresh(r->out, r->blocks * r->width);
    spread_blocks(r->keep, r->blocks, r->width, r->out, r->x, r->dbl, r->l2, r->zeros);
}

/* out[b * width + j] = keep[b] for every block b (bool bytes), in ``threads`` ranges; with
 * ``x`` (float or double, ``dbl``) and ``zeros`` below ``width`` (2, 4, 8 or 16), a pruned
 * block keeps all but its ``zeros`` smallest |x| (``l2``: x * x), ties by position. */
void fsp_spread(const uint8_t *keep, int64_t blocks, int64_t width, uint8_t *out,
                int64_t threads, const void *x, int64_t dbl, int64_t l2, int64_t zeros) {
    fsp_spread_range parts[MAX_TASKS];
    size_t size = dbl ? sizeof(double) : sizeof(float);
    int64_t count = task_count(blocks * width, blocks, threads);
    advise_fresh(out, blocks * width);
    for (int64_t t = 0; t < count; t++) {
        int64_t first = part_start(blocks, t, count);
        int64_t last = part_start(blocks, t + 1, count);
        parts[t] = (fsp_spread_range){keep + first, out + first * width, last - first, width,
                                      x ? (const char *)x + (size_t)(first * width) * size : NULL,
                                      dbl, l2, zeros};
    }
    run_all(run_spread, parts, sizeof(fsp_spread_range), count, threads);
}
