/* Shared by the engine's native kernels (one shared object, built by setup.py and loaded
 * with ctypes by fsparse/_src/engine/native.py; see docs/native.md). No Python headers. */
#ifndef FSPARSE_KERNELS_H
#define FSPARSE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

enum { PLAIN = 0, ABS = 1, ABS_PRODUCT = 2 }; /* how a segment's values are scored */
enum { MAX_THREADS = 64 };

/* One piece of a concatenation of scores (native_keep.py's Segment). */
typedef struct {
    const void *x;        /* values (float or double) */
    const void *y;        /* ABS_PRODUCT: the factor, same dtype */
    const uint8_t *alive; /* NULL: every place is live */
    uint8_t *keep;        /* out: the keep flags (bool bytes) */
    int64_t n;            /* elements */
    int64_t base;         /* position of element 0 in the concatenation */
    int64_t mode;         /* PLAIN, ABS or ABS_PRODUCT */
} fsp_segment;

/* Runs fn on each of ``count`` tasks of ``size`` bytes at ``tasks``, in parallel
 * (parallel.c: torch's OpenMP threads when handed over, else pthreads). */
__attribute__((visibility("hidden"))) void run_all(void *(*fn)(void *), void *tasks,
                                                size_t size, int64_t count);

static inline int64_t clamp_threads(int64_t threads) {
    return threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FSP_PORTABLE) /* FSP_PORTABLE: tests */
#define FSP_X86 1
#endif

#endif
