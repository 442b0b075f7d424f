/* The selection engine's one native kernel: the bracket pass of keep_masks.py, fused.
 *
 * For every value v of a concatenation of segments (plain scores, |x| or |x * y|):
 *   keep[i] = v > hi                     (and alive[i], where alive is given)
 *   v is a candidate if !(v < lo) && !(v > hi)   (lo <= v <= hi, or NaN; and alive[i])
 * Candidates are written in order (global position, value). The exact threshold is
 * then found among them in Python, as on the torch path; this file holds no policy.
 *
 * No Python headers: the shared object is loaded with ctypes (keep_native.py). The
 * work is split into contiguous ranges run by plain pthreads that block on join (no
 * spinning: a busy machine loses no time to waiting threads).
 */
#include <math.h>
#include <pthread.h>
#ifdef __linux__
#include <sys/mman.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { PLAIN = 0, ABS = 1, ABS_PRODUCT = 2 };

/* ---- running tasks in parallel -------------------------------------------------------- */

enum { MAX_THREADS = 64 };

/* torch's own OpenMP runtime, when keep_native hands it over (fsp_use_openmp): the tasks
 * then run on the threads torch's ops run on, which are awake (a fresh thread on an idle
 * or busy core starts late). Otherwise plain pthreads, joined (blocking, no spinning). */
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_fn)(void);
static gomp_parallel_fn omp_parallel = NULL;
static omp_int_fn omp_thread_num = NULL, omp_num_threads = NULL;

void fsp_use_openmp(void *parallel, void *thread_num, void *num_threads) {
    omp_parallel = (gomp_parallel_fn)parallel;
    omp_thread_num = (omp_int_fn)thread_num;
    omp_num_threads = (omp_int_fn)num_threads;
}

typedef struct {
    void *(*fn)(void *);
    char *tasks;
    size_t size;
    int64_t count;
} fsp_team;

static void team_body(void *arg) {
    fsp_team *team = (fsp_team *)arg;
    int64_t me = omp_thread_num(), width = omp_num_threads();
    for (int64_t t = me; t < team->count; t += width) team->fn(team->tasks + (size_t)t * team->size);
}

/* Runs fn on each of ``count`` tasks of ``size`` bytes at ``tasks``, in parallel. */
static void run_all(void *(*fn)(void *), void *tasks, size_t size, int64_t count) {
    if (count <= 1) {
        if (count == 1) fn(tasks);
        return;
    }
    if (omp_parallel && omp_thread_num && omp_num_threads) {
        fsp_team team = {fn, (char *)tasks, size, count};
        omp_parallel(team_body, &team, (unsigned)count, 0);
        return;
    }
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS];
    for (int64_t t = 1; t < count; t++)
        started[t] = pthread_create(&ids[t], NULL, fn, (char *)tasks + (size_t)t * size) == 0;
    fn(tasks);
    for (int64_t t = 1; t < count; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else
            fn((char *)tasks + (size_t)t * size); /* no thread: run it here */
    }
}

typedef struct {
    const void *x;        /* values (float or double) */
    const void *y;        /* ABS_PRODUCT: the factor, same dtype */
    const uint8_t *alive; /* NULL: every place is live */
    uint8_t *keep;        /* out: the keep flags (bool bytes) */
    int64_t n;            /* elements */
    int64_t base;         /* position of element 0 in the concatenation */
    int64_t mode;         /* PLAIN, ABS or ABS_PRODUCT */
} fsp_segment;

typedef struct {
    const fsp_segment *segs;
    int64_t nsegs, start, stop; /* this task's range of the concatenation */
    int dbl;
    double lo, hi;
    int64_t *cidx;
    void *cval;
    int64_t cap, nc, above;
} fsp_task;

#define BLK 2048

/* One segment range [s0, s1) in generic C (any ISA, float or double): the compares fill
 * small flag blocks the compiler vectorizes; candidates are read off 8 flags at a time. */
#define GENERIC_RANGE(T, ABSF)                                                              \
    static void range_##T(const fsp_segment *g, int64_t s0, int64_t s1, T lo, T hi,         \
                          fsp_task *t) {                                                    \
        const T *x = (const T *)g->x, *y = (const T *)g->y;                                 \
        T *cval = (T *)t->cval;                                                             \
        T vals[BLK];                                                                        \
        uint8_t flag[BLK];                                                                  \
        for (int64_t s = s0; s < s1; s += BLK) {                                            \
            int64_t m = s1 - s < BLK ? s1 - s : BLK, above = 0;                             \
            if (g->mode == PLAIN)                                                           \
                for (int64_t i = 0; i < m; i++) vals[i] = x[s + i];                         \
            else if (g->mode == ABS)                                                        \
                for (int64_t i = 0; i < m; i++) vals[i] = ABSF(x[s + i]);                   \
            else                                                                            \
                for (int64_t i = 0; i < m; i++) vals[i] = ABSF(x[s + i] * y[s + i]);        \
            for (int64_t i = 0; i < m; i++) {                                               \
                uint8_t k = vals[i] > hi;                                                   \
                flag[i] = (uint8_t)(!(vals[i] < lo) & !k);                                  \
                g->keep[s + i] = k;                                                         \
            }                                                                               \
            if (g->alive)                                                                   \
                for (int64_t i = 0; i < m; i++) {                                           \
                    g->keep[s + i] &= g->alive[s + i];                                      \
                    flag[i] &= g->alive[s + i];                                             \
                }                                                                           \
            for (int64_t i = 0; i < m; i++) above += g->keep[s + i];                        \
            t->above += above;                                                              \
            for (int64_t i = 0; i < m; i += 8) {                                            \
                uint64_t word = 0;                                                          \
                memcpy(&word, flag + i, (size_t)(m - i < 8 ? m - i : 8));                   \
                if (!word) continue;                                                        \
                for (int64_t j = i; j < i + 8 && j < m; j++)                                \
                    if (flag[j]) {                                                          \
                        if (t->nc < t->cap) {                                               \
                            t->cidx[t->nc] = g->base + s + j;                               \
                            cval[t->nc] = vals[j];                                          \
                        }                                                                   \
                        t->nc++;                                                            \
                    }                                                                       \
            }                                                                               \
        }                                                                                   \
    }

GENERIC_RANGE(float, fabsf)
GENERIC_RANGE(double, fabs)

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FSP_X86 1

/* Candidate positions of one 32-bit mask of a step starting at ``i`` (bit j: i + j). */
static inline void take_bits(const fsp_segment *g, int64_t i, uint32_t bits, fsp_task *t) {
    const float *x = (const float *)g->x, *y = (const float *)g->y;
    float *cval = (float *)t->cval;
    while (bits) {
        int j = __builtin_ctz(bits);
        bits &= bits - 1;
        if (t->nc < t->cap) {
            float v = x[i + j];
            t->cidx[t->nc] = g->base + i + j;
            cval[t->nc] = g->mode == PLAIN ? v : g->mode == ABS ? fabsf(v) : fabsf(v * y[i + j]);
        }
        t->nc++;
    }
}

/* float32 on AVX2: 32 values a step; keep bytes packed from the compares, candidates from
 * their bit masks. */
__attribute__((target("avx2"))) static void range_avx2(const fsp_segment *g, int64_t s0,
                                                        int64_t s1, float lo, float hi,
                                                        fsp_task *t) {
    const float *x = (const float *)g->x, *y = (const float *)g->y;
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(g->mode == PLAIN ? -1 : 0x7fffffff));
    const __m256i one = _mm256_set1_epi8(1), zero = _mm256_setzero_si256();
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t i = s0, above = 0;
    for (; i + 32 <= s1; i += 32) {
        __m256 v[4];
        for (int q = 0; q < 4; q++) {
            __m256 a = _mm256_loadu_ps(x + i + 8 * q);
            if (g->mode == ABS_PRODUCT) a = _mm256_mul_ps(a, _mm256_loadu_ps(y + i + 8 * q));
            v[q] = _mm256_and_ps(a, sign);
        }
        __m256i gt[4], out[4];
        for (int q = 0; q < 4; q++) {
            __m256 above_hi = _mm256_cmp_ps(v[q], vhi, _CMP_GT_OQ);
            gt[q] = _mm256_castps_si256(above_hi);
            out[q] = _mm256_castps_si256(_mm256_or_ps(above_hi, _mm256_cmp_ps(v[q], vlo, _CMP_LT_OQ)));
        }
        __m256i g8 = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(gt[0], gt[1]), _mm256_packs_epi32(gt[2], gt[3])),
            order);
        __m256i o8 = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(out[0], out[1]), _mm256_packs_epi32(out[2], out[3])),
            order);
        uint32_t cand = ~(uint32_t)_mm256_movemask_epi8(o8);
        if (g->alive) {
            __m256i live = _mm256_cmpgt_epi8(_mm256_loadu_si256((const __m256i *)(g->alive + i)), zero);
            g8 = _mm256_and_si256(g8, live);
            cand &= (uint32_t)_mm256_movemask_epi8(live);
        }
        _mm256_storeu_si256((__m256i *)(g->keep + i), _mm256_and_si256(g8, one));
        above += __builtin_popcount((uint32_t)_mm256_movemask_epi8(g8));
        if (cand) take_bits(g, i, cand, t);
    }
    t->above += above;
    if (i < s1) range_float(g, i, s1, lo, hi, t);
}

/* The same on SSE2 (every x86-64): 16 values a step. */
static void range_sse2(const fsp_segment *g, int64_t s0, int64_t s1, float lo, float hi,
                       fsp_task *t) {
    const float *x = (const float *)g->x, *y = (const float *)g->y;
    const __m128 vlo = _mm_set1_ps(lo), vhi = _mm_set1_ps(hi);
    const __m128 sign = _mm_castsi128_ps(_mm_set1_epi32(g->mode == PLAIN ? -1 : 0x7fffffff));
    const __m128i one = _mm_set1_epi8(1), zero = _mm_setzero_si128();
    int64_t i = s0, above = 0;
    for (; i + 16 <= s1; i += 16) {
        __m128 v[4];
        for (int q = 0; q < 4; q++) {
            __m128 a = _mm_loadu_ps(x + i + 4 * q);
            if (g->mode == ABS_PRODUCT) a = _mm_mul_ps(a, _mm_loadu_ps(y + i + 4 * q));
            v[q] = _mm_and_ps(a, sign);
        }
        __m128i gt[4], out[4];
        for (int q = 0; q < 4; q++) {
            __m128 above_hi = _mm_cmpgt_ps(v[q], vhi);
            gt[q] = _mm_castps_si128(above_hi);
            out[q] = _mm_castps_si128(_mm_or_ps(above_hi, _mm_cmplt_ps(v[q], vlo)));
        }
        __m128i g8 = _mm_packs_epi16(_mm_packs_epi32(gt[0], gt[1]), _mm_packs_epi32(gt[2], gt[3]));
        __m128i o8 = _mm_packs_epi16(_mm_packs_epi32(out[0], out[1]), _mm_packs_epi32(out[2], out[3]));
        uint32_t cand = (uint32_t)_mm_movemask_epi8(o8) ^ 0xffffu;
        if (g->alive) {
            __m128i live = _mm_cmpgt_epi8(_mm_loadu_si128((const __m128i *)(g->alive + i)), zero);
            g8 = _mm_and_si128(g8, live);
            cand &= (uint32_t)_mm_movemask_epi8(live);
        }
        _mm_storeu_si128((__m128i *)(g->keep + i), _mm_and_si128(g8, one));
        above += __builtin_popcount((uint32_t)_mm_movemask_epi8(g8));
        if (cand) take_bits(g, i, cand, t);
    }
    t->above += above;
    if (i < s1) range_float(g, i, s1, lo, hi, t);
}
#endif

/* Fresh outputs are first touched here: fault their pages in with one call per range
 * (Linux 5.14+; elsewhere, or if refused, the writes fault them in as usual). */
static void populate(void *start, int64_t bytes) {
#if defined(__linux__)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
    const uintptr_t page = 4096;
    uintptr_t first = ((uintptr_t)start + page - 1) & ~(page - 1);
    uintptr_t last = ((uintptr_t)start + (uintptr_t)bytes) & ~(page - 1);
    if (bytes >= (int64_t)(64 * page) && last > first)
        madvise((void *)first, last - first, MADV_POPULATE_WRITE);
#else
    (void)start;
    (void)bytes;
#endif
}

static void *run_task(void *arg) {
    fsp_task *t = (fsp_task *)arg;
    for (int64_t k = 0; k < t->nsegs; k++) {
        const fsp_segment *g = &t->segs[k];
        int64_t s0 = t->start - g->base, s1 = t->stop - g->base;
        if (s0 < 0) s0 = 0;
        if (s1 > g->n) s1 = g->n;
        if (s0 >= s1) continue;
        populate(g->keep + s0, s1 - s0);
        if (t->dbl) {
            range_double(g, s0, s1, t->lo, t->hi, t);
            continue;
        }
#ifdef FSP_X86
        if (__builtin_cpu_supports("avx2"))
            range_avx2(g, s0, s1, (float)t->lo, (float)t->hi, t);
        else
            range_sse2(g, s0, s1, (float)t->lo, (float)t->hi, t);
        continue;
#endif
        range_float(g, s0, s1, (float)t->lo, (float)t->hi, t);
    }
    return NULL;
}

/* The pass over ``nsegs`` segments (``total`` elements) in ``threads`` contiguous ranges.
 * Task ``t`` writes its candidates at ``cidx + t * cap`` and ``cval + t * cap`` (at most
 * ``cap``; ``nc[t]`` counts them all, so ``nc[t] > cap`` means overflow) and its kept
 * count in ``above[t]``. Returns the number of tasks run (a failed thread start runs its
 * range on the caller's thread). */
int64_t fsp_keep_pass(const fsp_segment *segs, int64_t nsegs, int64_t total, int64_t dbl,
                      double lo, double hi, int64_t threads, int64_t *cidx, void *cval,
                      int64_t cap, int64_t *nc, int64_t *above) {
    fsp_task tasks[MAX_THREADS];
    size_t width = dbl ? sizeof(double) : sizeof(float);
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    for (int64_t t = 0; t < threads; t++) {
        fsp_task *task = &tasks[t];
        task->segs = segs;
        task->nsegs = nsegs;
        task->start = total / threads * t + (t < total % threads ? t : total % threads);
        task->stop = task->start + total / threads + (t < total % threads);
        task->dbl = (int)dbl;
        task->lo = lo;
        task->hi = hi;
        task->cidx = cidx + t * cap;
        task->cval = (char *)cval + (size_t)(t * cap) * width;
        task->cap = cap;
        task->nc = task->above = 0;
    }
    run_all(run_task, tasks, sizeof(fsp_task), threads);
    int64_t at = 0;
    for (int64_t t = 0; t < threads; t++) {
        nc[t] = tasks[t].nc;
        above[t] = tasks[t].above;
        int64_t kept = nc[t] < cap ? nc[t] : cap;
        if (t > 0 && at + kept <= cap) { /* close up: the candidates of all tasks in order */
            memmove(cidx + at, tasks[t].cidx, (size_t)kept * sizeof(int64_t));
            memmove((char *)cval + (size_t)at * width, tasks[t].cval, (size_t)kept * width);
        }
        at += kept;
    }
    return threads;
}

/* ---- the threshold among the candidates -------------------------------------------- */

/* Order-preserving unsigned keys of non-NaN values (-0.0 keyed as +0.0: they are equal). */
static inline uint64_t key_f(float v) {
    uint32_t b;
    if (v == 0.0f) v = 0.0f;
    memcpy(&b, &v, 4);
    return (b & 0x80000000u) ? (uint64_t)(~b) : (uint64_t)(b | 0x80000000u);
}
static inline uint64_t key_d(double v) {
    uint64_t b;
    if (v == 0.0) v = 0.0;
    memcpy(&b, &v, 8);
    return (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
}

/* The rank-th smallest (1-based) of ``n`` non-NaN values, by a radix select on their
 * keys, 11 bits a pass from the highest bit where the keys differ (``keys``: scratch for
 * n keys). Writes the value to ``*out`` and returns how many values equal to it are
 * among the ``rank`` lowest (the ties), or -1 for a bad rank. */
int64_t fsp_kth(const void *vals, int64_t n, int64_t dbl, int64_t rank, uint64_t *keys,
                double *out) {
    if (rank < 1 || rank > n) return -1;
    uint64_t low = UINT64_MAX, high = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t key = dbl ? key_d(((const double *)vals)[i]) : key_f(((const float *)vals)[i]);
        keys[i] = key;
        low = key < low ? key : low;
        high = key > high ? key : high;
    }
    int top = 0; /* bits below the keys' common prefix */
    while (top < 64 && (low >> top) != (high >> top)) top++;
    uint64_t prefix = top < 64 ? low >> top : 0;
    int64_t m = n;
    for (int shift = top - 11; top > 0; shift -= 11) {
        int width = shift >= 0 ? 11 : 11 + shift;
        int lo_shift = shift >= 0 ? shift : 0;
        uint64_t dmask = ((uint64_t)1 << width) - 1;
        int64_t hist[2048] = {0};
        for (int64_t i = 0; i < m; i++) hist[(keys[i] >> lo_shift) & dmask]++;
        uint64_t d = 0;
        while (rank > hist[d]) rank -= hist[d++];
        prefix = (prefix << width) | d;
        if (lo_shift == 0) break;
        int64_t j = 0;
        for (int64_t i = 0; i < m; i++)
            if (((keys[i] >> lo_shift) & dmask) == d) keys[j++] = keys[i];
        m = j;
    }
    if (dbl) {
        uint64_t b = (prefix & 0x8000000000000000ull) ? (prefix & ~0x8000000000000000ull) : ~prefix;
        double v;
        memcpy(&v, &b, 8);
        *out = v;
    } else {
        uint32_t k = (uint32_t)prefix;
        uint32_t b = (k & 0x80000000u) ? (k & ~0x80000000u) : ~k;
        float v;
        memcpy(&v, &b, 4);
        *out = v;
    }
    return rank;
}

typedef struct {
    const fsp_segment *segs;
    int64_t nsegs, first, last, ties_before, ties;
    const void *vals;
    const int64_t *where;
    int dbl;
    double t;
} fsp_flags;

/* Candidates first..last: kept unless below the threshold or among the first ties. */
static void *run_flags(void *arg) {
    fsp_flags *f = (fsp_flags *)arg;
    int64_t s = 0, seen = f->ties_before;
    for (int64_t i = f->first; i < f->last; i++) {
        while (s < f->nsegs - 1 && f->where[i] >= f->segs[s].base + f->segs[s].n) s++;
        double v = f->dbl ? ((const double *)f->vals)[i] : (double)((const float *)f->vals)[i];
        uint8_t keep = !(v < f->t);
        if (v == f->t && seen < f->ties) {
            keep = 0;
            seen++;
        }
        f->segs[s].keep[f->where[i] - f->segs[s].base] = keep;
    }
    return NULL;
}

/* The candidates' keep flags from their exact answer: the ``need`` lowest (those below
 * the threshold, then the first ties equal to it, in order) are pruned, the others
 * kept (``need`` 0: all kept). ``where`` ascends; segment ``s`` covers [base, base + n).
 * Returns the ties, -1 if ``need`` is not in 0..n, or -2 - i when candidate ``i`` is
 * the first NaN (checked first); nothing is written unless it returns the ties. */
int64_t fsp_finish(const fsp_segment *segs, int64_t nsegs, const void *vals,
                   const int64_t *where, int64_t n, int64_t dbl, int64_t need,
                   uint64_t *keys, double *threshold, int64_t threads) {
    for (int64_t i = 0; i < n; i++) {
        double v = dbl ? ((const double *)vals)[i] : (double)((const float *)vals)[i];
        if (v != v) return -2 - i;
    }
    if (need < 0 || need > n) return -1;
    int64_t ties = 0;
    double t = -INFINITY; /* need 0: nothing is below it, and no tie is pruned */
    if (need > 0) ties = fsp_kth(vals, n, dbl, need, keys, &t);
    *threshold = t;
    fsp_flags parts[MAX_THREADS];
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    int64_t before = 0; /* ties among the earlier parts' candidates */
    for (int64_t p = 0; p < threads; p++) {
        fsp_flags *f = &parts[p];
        f->segs = segs;
        f->nsegs = nsegs;
        f->first = n * p / threads;
        f->last = n * (p + 1) / threads;
        f->vals = vals;
        f->where = where;
        f->dbl = (int)dbl;
        f->t = t;
        f->ties = ties;
        f->ties_before = before < ties ? before : ties;
        if (ties > 0 && p + 1 < threads)
            for (int64_t i = f->first; i < f->last && before < ties; i++) {
                double v = dbl ? ((const double *)vals)[i] : (double)((const float *)vals)[i];
                before += v == t;
            }
    }
    run_all(run_flags, parts, sizeof(fsp_flags), threads);
    return ties;
}

/* ---- the bracket's sample ------------------------------------------------------------ */

static inline uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct {
    const fsp_segment *segs;
    int64_t nsegs, total, size, first, last, found;
    int dbl;
    void *out;
} fsp_draws;

static inline void draw_value(const fsp_segment *g, int64_t i, int dbl, void *out, int64_t k) {
    if (dbl) {
        const double *x = (const double *)g->x;
        ((double *)out)[k] = g->mode == PLAIN ? x[i]
                           : g->mode == ABS ? fabs(x[i]) : fabs(x[i] * ((const double *)g->y)[i]);
    } else {
        const float *x = (const float *)g->x;
        ((float *)out)[k] = g->mode == PLAIN ? x[i]
                          : g->mode == ABS ? fabsf(x[i]) : fabsf(x[i] * ((const float *)g->y)[i]);
    }
}

/* Draws first..last of ``size`` (draw j falls uniformly in the j-th of ``size`` equal
 * strata of the concatenation); a place that is not alive gives -1. Positions are found
 * first, then read with prefetches some draws ahead (the reads are cache misses). */
static void *run_draws(void *arg) {
    enum { AHEAD = 16, CHUNK = 4096 };
    fsp_draws *d = (fsp_draws *)arg;
    uint64_t state = 0x5EED0000ull + (uint64_t)d->first;
    int64_t s = 0, found = 0;
    double stride = (double)d->total / (double)d->size;
    int64_t seg_of[CHUNK], at_of[CHUNK];
    for (int64_t j0 = d->first; j0 < d->last; j0 += CHUNK) {
        int64_t m = d->last - j0 < CHUNK ? d->last - j0 : CHUNK;
        for (int64_t j = 0; j < m; j++) {
            double u = (double)(splitmix64(&state) >> 11) * (1.0 / 9007199254740992.0);
            int64_t at = (int64_t)(((double)(j0 + j) + u) * stride);
            if (at >= d->total) at = d->total - 1;
            while (at >= d->segs[s].base + d->segs[s].n) s++;
            seg_of[j] = s;
            at_of[j] = at - d->segs[s].base;
        }
        for (int64_t j = 0; j < m; j++) {
            if (j + AHEAD < m) {
                const fsp_segment *h = &d->segs[seg_of[j + AHEAD]];
                __builtin_prefetch((const char *)h->x + at_of[j + AHEAD] * (d->dbl ? 8 : 4));
                if (h->y) __builtin_prefetch((const char *)h->y + at_of[j + AHEAD] * (d->dbl ? 8 : 4));
                if (h->alive) __builtin_prefetch(h->alive + at_of[j + AHEAD]);
            }
            const fsp_segment *g = &d->segs[seg_of[j]];
            if (g->alive && !g->alive[at_of[j]]) { /* pruned: below every score */
                if (d->dbl)
                    ((double *)d->out)[d->first + found++] = -1.0;
                else
                    ((float *)d->out)[d->first + found++] = -1.0f;
                continue;
            }
            draw_value(g, at_of[j], d->dbl, d->out, d->first + found++);
        }
    }
    d->found = found;
    return NULL;
}

/* ``size`` stratified, jittered draws over the segments (seeded: the same every call),
 * in ``threads`` ranges, written to ``out`` in order (-1 where not alive). Returns how
 * many were written (``size``). */
int64_t fsp_sample(const fsp_segment *segs, int64_t nsegs, int64_t total, int64_t dbl,
                   int64_t size, int64_t threads, void *out) {
    fsp_draws draws[MAX_THREADS];
    size_t width = dbl ? sizeof(double) : sizeof(float);
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    for (int64_t t = 0; t < threads; t++) {
        fsp_draws *d = &draws[t];
        d->segs = segs;
        d->nsegs = nsegs;
        d->total = total;
        d->size = size;
        d->first = size * t / threads;
        d->last = size * (t + 1) / threads;
        d->dbl = (int)dbl;
        d->out = out;
        d->found = 0;
    }
    run_all(run_draws, draws, sizeof(fsp_draws), threads);
    int64_t at = 0;
    for (int64_t t = 0; t < threads; t++) {
        memmove((char *)out + (size_t)at * width, (char *)out + (size_t)draws[t].first * width,
                (size_t)draws[t].found * width);
        at += draws[t].found;
    }
    return at;
}

/* ---- flag bytes and masked weights ---------------------------------------------------- */

typedef struct {
    const uint8_t *a, *b;
    void *w;
    int64_t n, dbl, result;
} fsp_range;

static void split(fsp_range *parts, int64_t threads, const fsp_range *whole) {
    for (int64_t t = 0; t < threads; t++) {
        int64_t first = whole->n * t / threads, last = whole->n * (t + 1) / threads;
        parts[t] = *whole;
        parts[t].a = whole->a ? whole->a + first : NULL;
        parts[t].b = whole->b ? whole->b + first : NULL;
        parts[t].w = whole->w ? (char *)whole->w + (size_t)first * (whole->dbl ? 8 : 4) : NULL;
        parts[t].n = last - first;
        parts[t].result = 0;
    }
}

static int64_t clamp_threads(int64_t threads) {
    return threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
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
