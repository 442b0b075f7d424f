/* The threshold among the bracket's candidates (radix select on order-preserving keys),
 * and the candidates' keep flags from it (native_keep.py). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"


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

/* The value whose key is ``prefix`` (as float, or double with ``dbl``). */
static double key_value(uint64_t prefix, int64_t dbl) {
    if (dbl) {
        uint64_t b = (prefix & 0x8000000000000000ull) ? (prefix & ~0x8000000000000000ull) : ~prefix;
        double v;
        memcpy(&v, &b, 8);
        return v;
    }
    uint32_t k = (uint32_t)prefix;
    uint32_t b = (k & 0x80000000u) ? (k & ~0x80000000u) : ~k;
    float v;
    memcpy(&v, &b, 4);
    return (double)v;
}

/* The rank-th smallest of ``m`` keys that share their bits from ``top`` up (``prefix``
 * holds them), 11 bits a pass from bit ``top`` down; ``keys`` is reordered. Writes the
 * value to ``*out`` and returns the ties (as kth). */
static int64_t select_from(uint64_t *keys, int64_t m, int64_t rank, int top, uint64_t prefix,
                           int64_t dbl, double *out) {
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
    *out = key_value(prefix, dbl);
    return rank;
}

/* The bits from which on ``low`` and ``high`` agree (64: none), and those bits. */
static int common_top(uint64_t low, uint64_t high, uint64_t *prefix) {
    int top = 0;
    while (top < 64 && (low >> top) != (high >> top)) top++;
    *prefix = top < 64 ? low >> top : 0;
    return top;
}

/* The rank-th smallest (1-based) of ``n`` non-NaN values, by a radix select on their
 * keys, 11 bits a pass from the highest bit where the keys differ (``keys``: scratch for
 * n keys). Writes the value to ``*out`` and returns how many values equal to it are
 * among the ``rank`` lowest (the ties), or -1 for a bad rank. */
static int64_t kth(const void *vals, int64_t n, int64_t dbl, int64_t rank, uint64_t *keys,
                   double *out) {
    if (rank < 1 || rank > n) return -1;
    uint64_t low = UINT64_MAX, high = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t key = dbl ? key_d(((const double *)vals)[i]) : key_f(((const float *)vals)[i]);
        keys[i] = key;
        low = key < low ? key : low;
        high = key > high ? key : high;
    }
    uint64_t prefix;
    int top = common_top(low, high, &prefix);
    return select_from(keys, n, rank, top, prefix, dbl, out);
}

/* The index of the first NaN of ``n`` values, or -1. */
static int64_t first_nan(const void *vals, int64_t n, int64_t dbl) {
    for (int64_t i = 0; i < n; i++) {
        double v = dbl ? ((const double *)vals)[i] : (double)((const float *)vals)[i];
        if (v != v) return i;
    }
    return -1;
}

/* One thread's part of kth_within's first pass: keys, their first digit's counts, the
 * lowest and highest key, and the first NaN. */
typedef struct {
    const void *vals;
    uint64_t *keys;
    uint32_t *hist;
    int64_t first, last, dbl, nan_at;
    int shift;
    uint64_t dmask, low, high;
} fsp_keying;

#define KEYING(T, KEY)                                                                      \
    static void keying_##T(fsp_keying *k) {                                                 \
        const T *v = (const T *)k->vals;                                                    \
        uint64_t low = UINT64_MAX, high = 0;                                                \
        for (int64_t i = k->first; i < k->last; i++) {                                      \
            if (v[i] != v[i]) {                                                             \
                k->nan_at = i;                                                              \
                return;                                                                     \
            }                                                                               \
            uint64_t key = KEY(v[i]);                                                       \
            k->keys[i] = key;                                                               \
            low = key < low ? key : low;                                                    \
            high = key > high ? key : high;                                                 \
            k->hist[(key >> k->shift) & k->dmask]++;                                        \
        }                                                                                   \
        k->low = low, k->high = high;                                                       \
    }
KEYING(float, key_f)
KEYING(double, key_d)

static void run_keying(void *arg, int64_t worker) {
    fsp_keying *k = (fsp_keying *)arg;
    (void)worker;
    if (k->dbl)
        keying_double(k);
    else
        keying_float(k);
}

/* kth of ``n`` candidates that lie in [lo, hi] or are NaN (the pass's): the bits
 * lo's and hi's keys share are every candidate's, so the first digit is known before any
 * key is made, and the keys and that digit's counts come from one pass on ``threads``
 * threads, which also finds the first NaN (returns -2 - its index; nothing else then).
 * A key outside [key(lo), key(hi)] falls back to kth's own pass (never, if the
 * candidates are the pass's). Equal ``lo`` and ``hi`` need no digit (width 0). */
static int64_t kth_within(const void *vals, int64_t n, int64_t dbl, int64_t rank, double lo,
                          double hi, uint64_t *keys, int64_t threads, double *out) {
    uint64_t klo = dbl ? key_d(lo) : key_f((float)lo), khi = dbl ? key_d(hi) : key_f((float)hi);
    uint64_t prefix;
    int top = common_top(klo, khi, &prefix);
    int shift = top - 11 > 0 ? top - 11 : 0, width = top - shift;
    int64_t count = task_count(n * 2, n, threads);
    count = count < clamp_threads(threads) ? count : clamp_threads(threads); /* a part each */
    fsp_keying parts[MAX_THREADS];
    uint32_t *hist = calloc((size_t)count << 11, sizeof(uint32_t));
    if (!hist) count = 0;
    for (int64_t p = 0; p < count; p++)
        parts[p] = (fsp_keying){vals, keys, hist + (p << 11), part_start(n, p, count),
                                part_start(n, p + 1, count), dbl, -1, shift,
                                ((uint64_t)1 << width) - 1, UINT64_MAX, 0};
    if (count) run_all(run_keying, parts, sizeof(fsp_keying), count, count);
    int in_bounds = count > 0;
    for (int64_t p = 0; p < count; p++) {
        if (parts[p].nan_at >= 0) {
            free(hist);
            return -2 - parts[p].nan_at;
        }
        if (parts[p].first < parts[p].last && (parts[p].low < klo || parts[p].high > khi))
            in_bounds = 0;
    }
    if (!in_bounds) { /* no memory for the counts, or not the pass's candidates */
        free(hist);
        int64_t nan_at = first_nan(vals, n, dbl);
        return nan_at >= 0 ? -2 - nan_at : kth(vals, n, dbl, rank, keys, out);
    }
    uint64_t d = 0;
    for (;;) {
        int64_t here = 0;
        for (int64_t p = 0; p < count; p++) here += parts[p].hist[d];
        if (rank <= here) break;
        rank -= here;
        d++;
    }
    free(hist);
    prefix = (prefix << width) | d;
    if (shift == 0) {
        *out = key_value(prefix, dbl);
        return rank;
    }
    uint64_t dmask = ((uint64_t)1 << width) - 1;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (((keys[i] >> shift) & dmask) == d) keys[m++] = keys[i];
    return select_from(keys, m, rank, shift, prefix, dbl, out);
}

/* How many of ``n`` values lie in [lo, hi] (NaN: none), in the values' dtype. */
int64_t fsp_count_between(const void *vals, int64_t n, int64_t dbl, double lo, double hi) {
    int64_t count = 0;
    if (dbl) {
        const double *v = (const double *)vals;
        for (int64_t i = 0; i < n; i++) count += (v[i] >= lo) & (v[i] <= hi);
    } else {
        const float *v = (const float *)vals;
        float l = (float)lo, h = (float)hi;
        for (int64_t i = 0; i < n; i++) count += (v[i] >= l) & (v[i] <= h);
    }
    return count;
}

/* One of fsp_kth_many's selects, on its own keys. */
typedef struct {
    const void *vals;
    int64_t n, dbl, rank;
    uint64_t *keys;
    double *out;
} fsp_select;

static void run_select(void *arg, int64_t worker) {
    fsp_select *q = (fsp_select *)arg;
    (void)worker;
    kth(q->vals, q->n, q->dbl, q->rank, q->keys, q->out);
}

/* kth for each of ``count`` ranks of the same values at once, on ``threads`` threads
 * (``keys``: scratch for count * n keys); writes the values to ``out``. Returns -1 if a
 * rank is bad (nothing written), else 0. */
int64_t fsp_kth_many(const void *vals, int64_t n, int64_t dbl, const int64_t *ranks,
                     int64_t count, uint64_t *keys, double *out, int64_t threads) {
    fsp_select parts[MAX_TASKS];
    if (count < 1 || count > MAX_TASKS) return -1;
    for (int64_t t = 0; t < count; t++) {
        if (ranks[t] < 1 || ranks[t] > n) return -1;
        parts[t] = (fsp_select){vals, n, dbl, ranks[t], keys + t * n, out + t};
    }
    run_all(run_select, parts, sizeof(fsp_select), count, threads);
    return 0;
}

typedef struct {
    const fsp_segment *segs;
    int64_t nsegs, first, last, ties_before, ties, revived;
    const void *vals;
    const int64_t *where;
    int dbl;
    double t, mid;
} fsp_flags;

/* Candidate i's flag: kept unless below the threshold or among the first ties; written
 * only where it differs from the pass's ``v > mid``. ``*s``: the segment the last one was
 * in (positions ascend); ``*seen``: the ties met so far. */
static inline void flag_one(fsp_flags *f, int64_t i, int64_t *s, int64_t *seen) {
    int64_t where = f->where[i] & ~FSP_LIVE_OFF;
    while (*s < f->nsegs - 1 && where >= f->segs[*s].base + f->segs[*s].n) ++*s;
    double v = f->dbl ? ((const double *)f->vals)[i] : (double)((const float *)f->vals)[i];
    uint8_t keep = !(v < f->t);
    if (v == f->t && *seen < f->ties) {
        keep = 0;
        ++*seen;
    }
    const fsp_segment *g = &f->segs[*s];
    int64_t at = where - g->base;
    if (keep != (v > f->mid) && g->elems) /* float32 block means: its elements */
        spread_blocks(&keep, 1, g->width, g->elems + at * g->width,
                      (const float *)g->x + at * g->width, 0, g->mode == BLOCK_L2, g->zeros);
    else if (keep != (v > f->mid))
        g->keep[at] = keep;
    if (keep && (f->where[i] & FSP_LIVE_OFF)) f->revived++; /* comes back */
}

/* Whether any of the 8 candidates from i needs flag_one: its flag differs from the guess,
 * it equals the threshold (a tie), or it lies where ``live`` is off. Branch-free, so the
 * compiler vectorizes it; most blocks need nothing (the threshold lies near ``mid``). */
#define BLOCK_NEEDS(T)                                                                      \
    static inline int needs_##T(const fsp_flags *f, int64_t i) {                             \
        const T *v = (const T *)f->vals + i;                                                \
        const double t = f->t, mid = f->mid;                                                \
        int any = 0;                                                                        \
        for (int j = 0; j < 8; j++) {                                                       \
            double x = (double)v[j];                                                        \
            any |= ((x < t) == (x > mid)) | (x == t) | ((f->where[i + j] & FSP_LIVE_OFF) != 0); \
        }                                                                                   \
        return any;                                                                         \
    }
BLOCK_NEEDS(float)
BLOCK_NEEDS(double)

/* Candidates first..last, 8 at a time: a block that needs nothing is passed over. */
static void run_flags(void *arg, int64_t worker) {
    fsp_flags *f = (fsp_flags *)arg;
    (void)worker;
    int64_t s = 0, seen = f->ties_before, i = f->first;
    for (; i + 8 <= f->last; i += 8)
        if (f->dbl ? needs_double(f, i) : needs_float(f, i))
            for (int64_t j = i; j < i + 8; j++) flag_one(f, j, &s, &seen);
    for (; i < f->last; i++) flag_one(f, i, &s, &seen);
}

/* The candidates' keep flags from their exact answer: the ``need`` lowest (those below
 * the threshold, then the first ties equal to it, in order) are pruned, the others
 * kept (``need`` 0: all kept), where they differ from the pass's ``v > mid`` (the same
 * ``mid``). ``where`` (less FSP_LIVE_OFF) ascends; segment ``s`` covers [base, base + n).
 * ``*revived``: the kept candidates marked FSP_LIVE_OFF by the pass. ``lo`` and ``hi``:
 * the pass's bracket (every candidate lies in it, or is NaN).
 * Returns the ties, -1 if ``need`` is not in 0..n, or -2 - i when candidate ``i`` is
 * the first NaN (checked first); nothing is written unless it returns the ties. */
int64_t fsp_finish(const fsp_segment *segs, int64_t nsegs, const void *vals,
                   const int64_t *where, int64_t n, int64_t dbl, int64_t need, double mid,
                   double lo, double hi, uint64_t *keys, double *threshold, int64_t threads,
                   int64_t *revived) {
    *revived = 0;
    int64_t ties = 0;
    double t = -INFINITY; /* need 0: nothing is below it, and no tie is pruned */
    if (need > 0 && need <= n) {
        ties = kth_within(vals, n, dbl, need, lo, hi, keys, threads, &t); /* NaN: < -1 */
        if (ties < -1) return ties;
    } else {
        int64_t nan_at = first_nan(vals, n, dbl);
        if (nan_at >= 0) return -2 - nan_at;
        if (need != 0) return -1;
    }
    *threshold = t;
    fsp_flags parts[MAX_TASKS];
    int64_t count = task_count(n * 8, n, threads); /* a candidate's flag: ~8 values' pass */
    int64_t before = 0; /* ties among the earlier parts' candidates */
    for (int64_t p = 0; p < count; p++) {
        fsp_flags *f = &parts[p];
        f->segs = segs;
        f->nsegs = nsegs;
        f->first = part_start(n, p, count);
        f->last = part_start(n, p + 1, count);
        f->vals = vals;
        f->where = where;
        f->dbl = (int)dbl;
        f->t = t;
        f->mid = mid;
        f->ties = ties;
        f->revived = 0;
        f->ties_before = before < ties ? before : ties;
        if (ties > 0 && p + 1 < count)
            for (int64_t i = f->first; i < f->last && before < ties; i++) {
                double v = dbl ? ((const double *)vals)[i] : (double)((const float *)vals)[i];
                before += v == t;
            }
    }
    run_all(run_flags, parts, sizeof(fsp_flags), count, threads);
    for (int64_t p = 0; p < count; p++) *revived += parts[p].revived;
    return ties;
}

