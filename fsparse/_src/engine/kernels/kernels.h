/* Shared by the engine's native kernels (one shared object, built by setup.py and loaded
 * with ctypes by fsparse/_src/engine/native.py; see docs/native.md). No Python headers. */
#ifndef FSPARSE_KERNELS_H
#define FSPARSE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* How a segment's values are scored: x, |x|, |x * y|, or the mean of |x| (BLOCK_L1) or of
 * x * x (BLOCK_L2) over each ``width`` consecutive elements (a norm block of one row). */
enum { PLAIN = 0, ABS = 1, ABS_PRODUCT = 2, BLOCK_L1 = 3, BLOCK_L2 = 4 };
enum { MAX_THREADS = 64 };

/* One piece of a concatenation of scores (native_keep.py's Segment). */
typedef struct {
    const void *x;        /* values (float or double) */
    const void *y;        /* ABS_PRODUCT: the factor, same dtype */
    const uint8_t *alive; /* NULL: every place is live */
    uint8_t *keep;        /* out: the keep flags (bool bytes) */
    int64_t n;            /* values (BLOCK_*: blocks) */
    int64_t base;         /* position of value 0 in the concatenation */
    int64_t mode;         /* PLAIN, ABS, ABS_PRODUCT, BLOCK_L1 or BLOCK_L2 */
    int64_t width;        /* BLOCK_*: elements per block */
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

/* Runs fn on each of ``count`` tasks of ``size`` bytes at ``tasks``, in parallel
 * (parallel.c: torch's OpenMP threads when handed over, else pthreads). */
__attribute__((visibility("hidden"))) void run_all(void *(*fn)(void *), void *tasks,
                                                size_t size, int64_t count);

/* Where part ``t`` of ``n`` items split into ``parts`` contiguous parts starts (part t
 * ends where part t + 1 starts); every kernel splits its work this way. */
static inline int64_t part_start(int64_t n, int64_t t, int64_t parts) {
    return n / parts * t + (t < n % parts ? t : n % parts);
}

static inline int64_t clamp_threads(int64_t threads) {
    return threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FSP_PORTABLE) /* FSP_PORTABLE: tests */
#define FSP_X86 1
#endif

#endif
