/* Flag bytes (counts, gains) and masked weight writes (native.py). */
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
} fsp_range;

static void split(fsp_range *parts, int64_t threads, const fsp_range *whole) {
    for (int64_t t = 0; t < threads; t++) {
        int64_t first = part_start(whole->n, t, threads);
        int64_t last = part_start(whole->n, t + 1, threads);
        parts[t] = *whole;
        parts[t].a = whole->a ? whole->a + first : NULL;
        parts[t].b = whole->b ? whole->b + first : NULL;
        parts[t].w = whole->w ? (char *)whole->w + (size_t)first * (whole->dbl ? 8 : 4) : NULL;
        parts[t].n = last - first;
        parts[t].result = 0;
    }
}

static void *run_count(void *arg) {
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
    return NULL;
}

/* Number of nonzero bytes of ``flags`` (a bool tensor's). */
int64_t fsp_count_true(const uint8_t *flags, int64_t n, int64_t threads) {
    fsp_range whole = {flags, NULL, NULL, n, 0, 0}, parts[MAX_THREADS];
    threads = clamp_threads(threads);
    split(parts, threads, &whole);
    run_all(run_count, parts, sizeof(fsp_range), threads);
    int64_t total = 0;
    for (int64_t t = 0; t < threads; t++) total += parts[t].result;
    return total;
}

static void *run_gains(void *arg) {
    fsp_range *r = (fsp_range *)arg;
    int64_t i = 0;
    for (; i + 64 <= r->n; i += 64) {
        uint64_t acc = 0;
        for (int j = 0; j < 64; j += 8) {
            uint64_t old, new_;
            memcpy(&old, r->a + i + j, 8);
            memcpy(&new_, r->b + i + j, 8);
            acc |= new_ & ~old;
        }
        if (acc) {
            r->result = 1;
            return NULL;
        }
    }
    for (; i < r->n; i++)
        if (r->b[i] && !r->a[i]) {
            r->result = 1;
            return NULL;
        }
    return NULL;
}

/* 1 if ``new`` is set somewhere ``old`` is not (bool bytes), else 0. */
int64_t fsp_gains(const uint8_t *old, const uint8_t *new_, int64_t n, int64_t threads) {
    fsp_range whole = {old, new_, NULL, n, 0, 0}, parts[MAX_THREADS];
    threads = clamp_threads(threads);
    split(parts, threads, &whole);
    run_all(run_gains, parts, sizeof(fsp_range), threads);
    for (int64_t t = 0; t < threads; t++)
        if (parts[t].result) return 1;
    return 0;
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

static void *run_zero(void *arg) {
    fsp_range *r = (fsp_range *)arg;
    if (r->dbl) {
        zero_double((double *)r->w, r->a, r->n);
        return NULL;
    }
#ifdef FSP_X86
    if (__builtin_cpu_supports("avx2")) {
        zero_avx2((float *)r->w, r->a, r->n);
        return NULL;
    }
#endif
    zero_float((float *)r->w, r->a, r->n);
    return NULL;
}

void fsp_zero_pruned(void *w, const uint8_t *keep, int64_t n, int64_t dbl, int64_t threads) {
    fsp_range whole = {keep, NULL, w, n, dbl, 0}, parts[MAX_THREADS];
    threads = clamp_threads(threads);
    split(parts, threads, &whole);
    run_all(run_zero, parts, sizeof(fsp_range), threads);
}

/* ---- spreading block flags over their elements ----------------------------------------- */

typedef struct {
    const uint8_t *keep;
    uint8_t *out;
    int64_t blocks, width;
} fsp_spread_range;

static void *run_spread(void *arg) {
    fsp_spread_range *r = (fsp_spread_range *)arg;
    const uint8_t *keep = r->keep;
    uint8_t *out = r->out;
    populate_fresh(out, r->blocks * r->width);
    if (r->width == 4) { /* one 32-bit store per block: its flag in every byte */
        for (int64_t b = 0; b < r->blocks; b++) {
            uint32_t word = (uint32_t)keep[b] * 0x01010101u;
            memcpy(out + 4 * b, &word, 4);
        }
    } else if (r->width == 8) {
        for (int64_t b = 0; b < r->blocks; b++) {
            uint64_t word = (uint64_t)keep[b] * 0x0101010101010101ull;
            memcpy(out + 8 * b, &word, 8);
        }
    } else {
        for (int64_t b = 0; b < r->blocks; b++) memset(out + b * r->width, keep[b], (size_t)r->width);
    }
    return NULL;
}

/* out[b * width + j] = keep[b] for every block b (bool bytes), in ``threads`` ranges. */
void fsp_spread(const uint8_t *keep, int64_t blocks, int64_t width, uint8_t *out,
                int64_t threads) {
    fsp_spread_range parts[MAX_THREADS];
    threads = clamp_threads(threads);
    for (int64_t t = 0; t < threads; t++) {
        int64_t first = part_start(blocks, t, threads);
        int64_t last = part_start(blocks, t + 1, threads);
        parts[t].keep = keep + first;
        parts[t].out = out + first * width;
        parts[t].blocks = last - first;
        parts[t].width = width;
    }
    run_all(run_spread, parts, sizeof(fsp_spread_range), threads);
}
