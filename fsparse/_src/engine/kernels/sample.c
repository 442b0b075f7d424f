/* The bracket's sample: stratified, jittered, seeded draws over the segments, read with
 * prefetches (native_keep.py). */
#include <math.h>
#include <string.h>

#include "kernels.h"

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
    if (g->mode == RANDOM) { /* float32 only (native_keep.applies) */
        ((float *)out)[k] = rng_at(g->key, i);
        return;
    }
    if (g->mode == MOVEMENT_SCORES) { /* float32 only, likewise */
        const float *s = (const float *)g->x, *grad = (const float *)g->y;
        ((float *)out)[k] = movement_score_float(s[i], grad[i], ((const float *)g->z)[i],
                                                 g->live[i]);
        return;
    }
    if (g->mode >= BLOCK_L1) {
        if (dbl)
            ((double *)out)[k] = block_mean_double(g, i);
        else
            ((float *)out)[k] = block_mean_float(g, i);
        return;
    }
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
 * strata of the concatenation); a place that is not alive gives none. Positions are found
 * first, then read with prefetches some draws ahead (the reads are cache misses). */
static void run_draws(void *arg, int64_t worker) {
    enum { AHEAD = 16, CHUNK = 4096 };
    fsp_draws *d = (fsp_draws *)arg;
    (void)worker;
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
                int64_t at = at_of[j + AHEAD], size = d->dbl ? 8 : 4;
                int64_t step = (h->mode == BLOCK_L1 || h->mode == BLOCK_L2 ? h->width : 1) * size;
                if (h->x) __builtin_prefetch((const char *)h->x + at * step);
                if (h->y) __builtin_prefetch((const char *)h->y + at * size);
                if (h->z) __builtin_prefetch((const char *)h->z + at * size);
                if (h->live) __builtin_prefetch(h->live + at);
                if (h->alive) __builtin_prefetch(h->alive + at);
            }
            const fsp_segment *g = &d->segs[seg_of[j]];
            if (g->alive && !g->alive[at_of[j]]) continue; /* pruned: not drawn */
            draw_value(g, at_of[j], d->dbl, d->out, d->first + found++);
        }
    }
    d->found = found;
}

/* ``size`` stratified, jittered draws over the segments, in ranges on ``threads``
 * threads; the values of those at alive places are written to ``out`` in order. Returns
 * how many were written (``size`` less the draws that fell on pruned places). The draws
 * are split into ranges as for SPLIT_THREADS threads whatever ``threads`` is, and each
 * range is seeded by where it starts, so every call draws the same (a busy machine runs
 * the sample on one thread: busy.py). */
enum { SPLIT_THREADS = 16 };

int64_t fsp_sample(const fsp_segment *segs, int64_t nsegs, int64_t total, int64_t dbl,
                   int64_t size, int64_t threads, void *out) {
    fsp_draws draws[MAX_TASKS];
    size_t width = dbl ? sizeof(double) : sizeof(float);
    int64_t count = task_count(size * 16, size, SPLIT_THREADS); /* a draw: ~16 values' pass */
    for (int64_t t = 0; t < count; t++) {
        fsp_draws *d = &draws[t];
        d->segs = segs;
        d->nsegs = nsegs;
        d->total = total;
        d->size = size;
        d->first = part_start(size, t, count);
        d->last = part_start(size, t + 1, count);
        d->dbl = (int)dbl;
        d->out = out;
        d->found = 0;
    }
    run_all(run_draws, draws, sizeof(fsp_draws), count, threads);
    int64_t at = 0;
    for (int64_t t = 0; t < count; t++) {
        memmove((char *)out + (size_t)at * width, (char *)out + (size_t)draws[t].first * width,
                (size_t)draws[t].found * width);
        at += draws[t].found;
    }
    return at;
}

