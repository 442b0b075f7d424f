/* Fresh outputs (a new mask, a new score tensor) are first touched by the kernels that
 * write them. Faulting their pages in one page at a time cost more than the pass itself
 * (64 MiB of bool flags: ~22 ms of faults against a ~20 ms pass on the test VM), so the
 * whole output is first advised to use huge pages where the kernel allows them (2 MiB
 * pages: ~8 ms for the same 64 MiB), and each task then faults its part in with one call.
 * A range whose first page is already resident (the allocator's reused heap, mostly) is
 * left alone: there the calls only cost time. Only the range being written is advised;
 * no process-wide setting changes. Elsewhere than Linux 5.14+, or where refused, the
 * writes fault the pages in as usual. */
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "kernels.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

enum { PAGE = 4096, HUGE_PAGE = 2 << 20 };

#if defined(__linux__)
/* The whole pages of [start, start + bytes) in *first, *last, if there are enough of them
 * to be worth a call and the first is not resident. */
static int fresh_pages(void *start, int64_t bytes, uintptr_t *first, uintptr_t *last) {
    uintptr_t begin = (uintptr_t)start, end = begin + (uintptr_t)(bytes > 0 ? bytes : 0);
    *first = (begin + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
    *last = end & ~(uintptr_t)(PAGE - 1);
    if (bytes < (int64_t)(64 * PAGE) || *last <= *first) return 0;
    unsigned char resident = 0;
    return !(mincore((void *)*first, PAGE, &resident) == 0 && (resident & 1));
}
#endif

void advise_fresh(void *start, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    uintptr_t first, last;
    if (!fresh_pages(start, bytes, &first, &last)) return;
    uintptr_t hfirst = (first + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    uintptr_t hlast = last & ~(uintptr_t)(HUGE_PAGE - 1);
    if (hlast >= hfirst + 2 * (uintptr_t)HUGE_PAGE)
        madvise((void *)hfirst, hlast - hfirst, MADV_HUGEPAGE);
#else
    (void)start;
    (void)bytes;
#endif
}

void populate_fresh(void *start, int64_t bytes) {
#if defined(__linux__)
    uintptr_t first, last;
    if (fresh_pages(start, bytes, &first, &last))
        madvise((void *)first, last - first, MADV_POPULATE_WRITE);
#else
    (void)start;
    (void)bytes;
#endif
}
