/* Fresh outputs (a new mask, a new score tensor) are first touched by the kernels that
 * write them. Faulting their pages in one page at a time cost more than the pass itself
 * (64 MiB of bool flags: ~22 ms of faults against a ~20 ms pass on the test VM), so each
 * task faults its range in with one call, on huge pages where the kernel allows them
 * (2 MiB pages: ~8 ms for the same 64 MiB). A range whose first page is already resident
 * (the allocator's reused heap, mostly) is left alone: there the calls only cost time.
 * Only the range being written is advised; no process-wide setting changes. Elsewhere
 * than Linux 5.14+, or where refused, the writes fault the pages in as usual. */
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "kernels.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

void populate_fresh(void *start, int64_t bytes) {
#if defined(__linux__)
    const uintptr_t page = 4096, huge = (uintptr_t)2 << 20;
    uintptr_t begin = (uintptr_t)start, end = begin + (uintptr_t)(bytes > 0 ? bytes : 0);
    uintptr_t first = (begin + page - 1) & ~(page - 1), last = end & ~(page - 1);
    if (bytes < (int64_t)(64 * page) || last <= first) return;
    unsigned char resident = 0;
    if (mincore((void *)first, page, &resident) == 0 && (resident & 1)) return; /* reused */
#ifdef MADV_HUGEPAGE
    uintptr_t hfirst = (begin + huge - 1) & ~(huge - 1), hlast = end & ~(huge - 1);
    if (hlast >= hfirst + 2 * huge) madvise((void *)hfirst, hlast - hfirst, MADV_HUGEPAGE);
#endif
    madvise((void *)first, last - first, MADV_POPULATE_WRITE);
#else
    (void)start;
    (void)bytes;
#endif
}
