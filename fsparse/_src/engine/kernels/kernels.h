/* Shared by the engine's native kernels (one shared object, built by setup.py and loaded
 * with ctypes by fsparse/_src/engine/native.py; see docs/native.md). No Python headers. */
#ifndef FSPARSE_KERNELS_H
#define FSPARSE_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* How a segment's values are scored: x, |x|, |x * y|, the mean of |x| (BLOCK_L1) or of
 * x * x (BLOCK_L2) over each ``width`` consecutive elements (a norm block of one row), or
 * RANDOM: value i of the counter-based stream ``key`` (float32; random.c), or
 * MOVEMENT_SCORES: movement pruning's next score from x = S, y = g, z = w and ``live``
 * (float32; movement_score), which the pass also writes to ``out``. */
enum { PLAIN = 0, ABS = 1, ABS_PRODUCT = 2, BLOCK_L1 = 3, BLOCK_L2 = 4, RANDOM = 5,
       MOVEMENT_SCORES = 6 };
/* In a candidate's position (keep_pass.c -> threshold.c): it lies where a MOVEMENT_SCORES
 * segment's ``live`` is off, so it comes back if kept (the pass reads ``live`` in order
 * anyway; the finish would otherwise look it up, a cache miss a candidate). */
#define FSP_LIVE_OFF ((int64_t)1 << 62)
/* Streaming passes ask for the memory FSP_AHEAD bytes ahead of where they read: the
 * hardware's stream prefetchers stop at each page boundary, and most tensors sit on 4 KiB
 * pages (resnet18's update pass: ~3.6-5.5 -> ~2.4-2.7 ms on 2 threads). A prefetch of an
 * address past the end is harmless. */
#define FSP_AHEAD 4096
static inline void ahead(const void *p) { __builtin_prefetch((const char *)p + FSP_AHEAD); }

/* Threads a kernel runs on, at most; tasks its work is split into, at most; tasks per
 * thread (parallel.c hands them out as threads come free); items per task, at least. */
enum { MAX_THREADS = 64, MAX_TASKS = 256, TASKS_PER_THREAD = 16, MIN_TASK = 1 << 16 };

/* One piece of a concatenation of scores (native_keep.py's Segment). */
typedef struct {
    const void *x;        /* values (float or double) */
    const void *y;        /* ABS_PRODUCT: the factor, same dtype */
    const uint8_t *alive; /* NULL: every place is live */
    uint8_t *keep;        /* out: the keep flags (bool bytes) */
    int64_t n;            /* values (BLOCK_*: blocks) */
    int64_t base;         /* position of value 0 in the concatenation */
    int64_t mode;         /* PLAIN, ... or MOVEMENT_SCORES (above) */
    int64_t width;        /* BLOCK_*: elements per block */
    uint64_t key;         /* RANDOM: the stream */
    const void *z;        /* MOVEMENT_SCORES: the weights */
    const uint8_t *live;  /* MOVEMENT_SCORES: where the score moves (else it stays) */
    void *out;            /* MOVEMENT_SCORES: the scores, written by the pass */
    uint8_t *elems;       /* float32 BLOCK_*: the element flags, written instead of keep */
    int64_t zeros;        /* elems: how many of a pruned block's elements are pruned */
} fsp_segment;

/* Block ``b``'s mean score, summed from its first element and divided by its size, as
 * avg_pool2d and the chunked path do (bit for bit). */
#define BLOCK_MEAN(T, ABSF)                                                                 \
    static inline T block_mean_##T(const fsp_segment *g, int64_t b) {                       \
        const T *p = (const T *)g->x + b * g->width;                                        \
        int l2 = g->mode == BLOCK_L2;                                                       \
        T acc = l2 ? p[0] * p[0] : ABSF(p[0]);                                              \
        for (int64_t j = 1; j < g->width; j++) acc += l2 ? p[j] * p[j] : ABSF(p[j]);        \
        return acc / (T)g->width;                                                           \
    }
#include <math.h>
BLOCK_MEAN(float, fabsf)
BLOCK_MEAN(double, fabs)

/* ``v`` where ``take`` (its low bit) is set, else +0.0: a bit mask, so no branch and the
 * same bits as torch's where(take, v, 0) (signs of zero, inf and NaN kept). */
#define MASKED(T, U)                                                                        \
    static inline T masked_##T(T v, uint8_t take) {                                         \
        U bits, mask = (U)0 - (U)(take & 1);                                                \
        memcpy(&bits, &v, sizeof bits);                                                     \
        bits &= mask;                                                                       \
        memcpy(&v, &bits, sizeof v);                                                        \
        return v;                                                                           \
    }
MASKED(float, uint32_t)
MASKED(double, uint64_t)

/* Movement pruning's next score, (live ? -(g * w) : +0.0) + s, in the operations and order
 * of fsparse/pruners/_movement.py: the same bits (scores.c, keep_pass.c and sample.c). */
#define MOVEMENT_SCORE(T)                                                                   \
    static inline T movement_score_##T(T s, T g, T w, uint8_t live) {                       \
        return masked_##T(-(g * w), live) + s;                                              \
    }
MOVEMENT_SCORE(float)
MOVEMENT_SCORE(double)

/* The counter-based stream of counter_rng.py (its docstring defines it): the block keys of
 * positions hi * 2**32 ..., Mueller's 32-bit hash, and value i of stream ``key``. */
static inline void rng_block_keys(uint64_t key, uint64_t hi, uint32_t *k1, uint32_t *k2) {
    uint64_t z = key + (hi + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    *k1 = (uint32_t)z;
    *k2 = (uint32_t)(z >> 32);
}

static inline uint32_t rng_mix(uint32_t x) {
    x ^= x >> 16;
    x *= 0x45D9F3Bu;
    x ^= x >> 16;
    x *= 0x45D9F3Bu;
    return x ^ (x >> 16);
}

static inline float rng_value(uint32_t k1, uint32_t k2, uint32_t lo) {
    return (float)(rng_mix(rng_mix(lo ^ k1) ^ k2) >> 8) * 0x1p-24f;
}

static inline float rng_at(uint64_t key, int64_t i) {
    uint32_t k1, k2;
    rng_block_keys(key, (uint64_t)i >> 32, &k1, &k2);
    return rng_value(k1, k2, (uint32_t)i);
}

/* Values start .. start + n - 1 of stream ``key`` into out (random.c; AVX2 where the CPU
 * has it, else vectorized by the compiler). */
__attribute__((visibility("hidden"))) void rng_fill(uint64_t key, int64_t start, int64_t n,
                                                 float *out);

/* A fresh output range (fresh.c): advise_fresh, once for the whole output before its
 * tasks run, asks for huge pages where it is fresh; populate_fresh, by each task on its
 * part, faults that part in with one call before it is written. */
__attribute__((visibility("hidden"))) void advise_fresh(void *start, int64_t bytes);
__attribute__((visibility("hidden"))) void populate_fresh(void *start, int64_t bytes);

/* Block flags spread over their elements (flags.c): out[b * width + j] = keep[b], except
 * that with ``x`` (float or double, ``dbl``) and ``zeros`` below ``width`` (2, 4, 8 or 16)
 * a pruned block keeps all but its ``zeros`` smallest |x| (``l2``: x * x), ties by
 * position. One thread; fsp_spread runs it on many, the pass on each range it reads. */
__attribute__((visibility("hidden"))) void spread_blocks(const uint8_t *keep, int64_t blocks,
                                                      int64_t width, uint8_t *out,
                                                      const void *x, int64_t dbl, int64_t l2,
                                                      int64_t zeros);

/* A kernel's work on one task, run by thread ``worker`` (0 .. workers - 1; a thread runs
 * its tasks one after another). */
typedef void (*fsp_work)(void *task, int64_t worker);

/* Runs fn on each of ``count`` tasks of ``size`` bytes at ``tasks`` on ``workers``
 * threads (parallel.c: torch's OpenMP threads when handed over, else pthreads). Each
 * thread takes the next task not yet taken, so a thread the OS pauses (a busy machine)
 * holds up only the task it is on: the others take the rest. */
__attribute__((visibility("hidden"))) void run_all(fsp_work fn, void *tasks, size_t size,
                                                int64_t count, int64_t workers);

/* Where part ``t`` of ``n`` items split into ``parts`` contiguous parts starts (part t
 * ends where part t + 1 starts); every kernel splits its work this way. */
static inline int64_t part_start(int64_t n, int64_t t, int64_t parts) {
    return n / parts * t + (t < n % parts ? t : n % parts);
}

static inline int64_t clamp_threads(int64_t threads) {
    return threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
}

/* Tasks for ``units`` splittable items costing about ``cost`` values' pass in all, on
 * ``threads`` threads (clamped): one alone; else TASKS_PER_THREAD per thread, as far as
 * MIN_TASK values each (and MAX_TASKS in all) allow, at least one per thread, and never
 * more than ``units`` (but at least one task). */
static inline int64_t task_count(int64_t cost, int64_t units, int64_t threads) {
    int64_t workers = clamp_threads(threads), count = 1;
    if (workers > 1) {
        int64_t most = cost / MIN_TASK;
        count = workers * TASKS_PER_THREAD;
        count = count < most ? count : most;
        count = count > workers ? count : workers;
        count = count < MAX_TASKS ? count : MAX_TASKS;
    }
    count = count < units ? count : units;
    return count > 0 ? count : 1;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FSP_PORTABLE) /* FSP_PORTABLE: tests */
#define FSP_X86 1
#include <immintrin.h>

/* The scores (|x|, or x * x with l2) of 8 blocks of 4 floats at p, transposed on AVX2:
 * e[j] holds element j of blocks 0 2 4 6 | 1 3 5 7 (permute by 0 4 1 5 2 6 3 7 to put
 * lanes back in block order). Summing e[0] + e[1] + e[2] + e[3] adds each block from its
 * first element. */
__attribute__((target("avx2"))) static inline void block4_scores(const float *p, int l2,
                                                                 __m256 e[4]) {
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8);
    __m256 v2 = _mm256_loadu_ps(p + 16), v3 = _mm256_loadu_ps(p + 24);
    __m256 t0 = _mm256_unpacklo_ps(v0, v1), t1 = _mm256_unpackhi_ps(v0, v1);
    __m256 t2 = _mm256_unpacklo_ps(v2, v3), t3 = _mm256_unpackhi_ps(v2, v3);
    e[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    e[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
    e[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    e[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
    for (int j = 0; j < 4; j++) e[j] = l2 ? _mm256_mul_ps(e[j], e[j]) : _mm256_and_ps(e[j], sign);
}

/* The element flags of the 8 blocks whose scores block4_scores gave, were they pruned: one
 * 32-bit word a block, in block order (byte j: element j stays). Element j stays iff
 * #{i < j: s_i <= s_j} + #{i > j: s_i < s_j} >= zeros, so ties go by position. Each pair
 * is compared once, since !(s_i <= s_j) is s_j < s_i for scores that are not NaN (the
 * callers' are finite: a NaN or infinite block mean fails the pass before any spread). */
__attribute__((target("avx2"))) static inline __m256i pruned_words4(const __m256 e[4],
                                                                 int64_t zeros) {
    const __m256i below = _mm256_set1_epi32((int)zeros - 1), all = _mm256_set1_epi32(-1);
    __m256i rank[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                       _mm256_setzero_si256()}; /* minus the ranks: compares give -1 */
    for (int a = 0; a < 4; a++)
        for (int b = a + 1; b < 4; b++) {
            __m256i le = _mm256_castps_si256(_mm256_cmp_ps(e[a], e[b], _CMP_LE_OQ));
            rank[b] = _mm256_add_epi32(rank[b], le);
            rank[a] = _mm256_add_epi32(rank[a], _mm256_xor_si256(le, all));
        }
    __m256i word = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        __m256i stays = _mm256_cmpgt_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), rank[j]),
                                           below);
        word = _mm256_or_si256(word, _mm256_and_si256(stays, _mm256_set1_epi32(1 << (8 * j))));
    }
    /* lanes hold blocks 0 2 4 6 | 1 3 5 7: put them back in order */
    return _mm256_permutevar8x32_epi32(word, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
#endif

/* Copies ``bytes`` from src to dst with stores that bypass the cache where the CPU has
 * them (SSE2): a pass's output is not read again soon, and a plain store first reads the
 * line it writes (one more pass's worth of traffic). stream_fence() orders them before
 * the task reports done. */
static inline void stream_copy(void *dst, const void *src, size_t bytes) {
#ifdef FSP_X86
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    if (head > bytes) head = bytes;
    memcpy(d, s, head);
    d += head, s += head, bytes -= head;
    for (; bytes >= 16; bytes -= 16, d += 16, s += 16)
        _mm_stream_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)s));
    memcpy(d, s, bytes);
#else
    memcpy(dst, src, bytes);
#endif
}

static inline void stream_fence(void) {
#ifdef FSP_X86
    _mm_sfence();
#endif
}

#endif
