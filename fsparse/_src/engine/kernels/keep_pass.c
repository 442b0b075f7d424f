/* The bracket pass of keep_masks.py, fused (native_keep.py).
 *
 * For every value v of a concatenation of segments (plain scores, |x|, |x * y|, block
 * means, the counter-based random stream or movement's next scores):
 *   keep[i] = v > mid                    (and alive[i], where alive is given)
 *   v is kept for sure if v > hi, and counted (``above``)
 *   v is a candidate if !(v < lo) && !(v > hi)   (lo <= v <= hi, or NaN; and alive[i])
 * with lo <= mid <= hi. Candidates are written in order (global position, value; the
 * position has FSP_LIVE_OFF set where a MOVEMENT_SCORES ``live`` is off);
 * threshold.c finds the exact threshold among them and rewrites the flags of those the
 * guess ``v > mid`` got wrong: the threshold lies near the bracket's middle, so that is a
 * small share of them. AVX2 or SSE2 on x86-64, portable C elsewhere.
 */
#include <math.h>
#include <string.h>

#include "kernels.h"

#ifdef FSP_X86
#include <immintrin.h>
#endif

/* Where one run of the range functions writes its candidates (at most ``cap`` more at
 * cidx, cval), counts them all (``nc``), counts its kept flags and its largest value (NaN
 * ignored: +inf tells a non-finite score), and the values above hi at places where a
 * MOVEMENT_SCORES segment's ``live`` is off (weights that come back). */
typedef struct {
    int64_t *cidx;
    void *cval;
    int64_t cap, nc, above;
    double vmax;
    int64_t revived;
} fsp_cursor;

#define BLK 2048
#define MAX_BLOCK_WIDTH 16 /* block means with elems: 2, 4, 8 or 16 (native_keep.py) */

#ifdef FSP_X86
/* Means of blocks s.. of width 4 into vals, 8 blocks a step on AVX2: a 4 x 8 transpose
 * puts element j of 8 blocks in one vector, so each lane sums its block from the first
 * element, as block_mean_float does. With ``words``, also each block's element flags were
 * it pruned (pruned_words4), from the same transposed scores. Returns how many it filled
 * (a multiple of 8). */
__attribute__((target("avx2"))) static int64_t means4_avx2(const fsp_segment *g, int64_t s,
                                                           int64_t m, float *vals,
                                                           uint32_t *words) {
    const float *x = (const float *)g->x + s * 4;
    const __m256 four = _mm256_set1_ps(4.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int l2 = g->mode == BLOCK_L2;
    int64_t i = 0;
    for (; i + 8 <= m; i += 8) {
        ahead(x + 4 * i), ahead(x + 4 * i + 16);
        __m256 e[4];
        block4_scores(x + 4 * i, l2, e);
        __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(e[0], e[1]), e[2]), e[3]);
        /* lanes hold blocks 0 2 4 6 | 1 3 5 7: put them back in order */
        _mm256_storeu_ps(vals + i, _mm256_permutevar8x32_ps(_mm256_div_ps(sum, four), order));
        if (words) _mm256_storeu_si256((__m256i *)(words + i), pruned_words4(e, g->zeros));
    }
    return i;
}
#endif

static inline int64_t fill_means_float(const fsp_segment *g, int64_t s, int64_t m,
                                       float *vals) {
#ifdef FSP_X86
    if (g->width == 4 && __builtin_cpu_supports("avx2")) return means4_avx2(g, s, m, vals, NULL);
#endif
    (void)g, (void)s, (void)m, (void)vals;
    return 0;
}

static inline int64_t fill_means_double(const fsp_segment *g, int64_t s, int64_t m,
                                        double *vals) {
    (void)g, (void)s, (void)m, (void)vals;
    return 0;
}

/* One segment range [s0, s1) in generic C (any ISA, float or double): the compares fill
 * small flag blocks the compiler vectorizes; candidates are read off 8 flags at a time. */
#define GENERIC_RANGE(T, ABSF)                                                              \
    static void range_##T(const fsp_segment *g, int64_t s0, int64_t s1, T lo, T mid, T hi,  \
                          fsp_cursor *t) {                                                  \
        const T *x = (const T *)g->x, *y = (const T *)g->y;                                 \
        T *cval = (T *)t->cval;                                                             \
        T vals[BLK];                                                                        \
        uint8_t flag[BLK], up[BLK];                                                         \
        for (int64_t s = s0; s < s1; s += BLK) {                                            \
            int64_t m = s1 - s < BLK ? s1 - s : BLK, above = 0;                             \
            if (g->mode >= BLOCK_L1) /* float64 block means (float32: range_computed) */   \
                for (int64_t i = fill_means_##T(g, s, m, vals); i < m; i++)                 \
                    vals[i] = block_mean_##T(g, s + i);                                     \
            else if (g->mode == PLAIN)                                                      \
                for (int64_t i = 0; i < m; i++) vals[i] = x[s + i];                         \
            else if (g->mode == ABS)                                                        \
                for (int64_t i = 0; i < m; i++) vals[i] = ABSF(x[s + i]);                   \
            else                                                                            \
                for (int64_t i = 0; i < m; i++) vals[i] = ABSF(x[s + i] * y[s + i]);        \
            T top = (T)t->vmax;                                                             \
            for (int64_t i = 0; i < m; i++) top = vals[i] > top ? vals[i] : top;            \
            t->vmax = (double)top;                                                          \
            for (int64_t i = 0; i < m; i++) {                                               \
                up[i] = vals[i] > hi;                                                       \
                flag[i] = (uint8_t)(!(vals[i] < lo) & !up[i]);                              \
                g->keep[s + i] = vals[i] > mid;                                             \
            }                                                                               \
            if (g->alive)                                                                   \
                for (int64_t i = 0; i < m; i++) {                                           \
                    g->keep[s + i] &= g->alive[s + i];                                      \
                    flag[i] &= g->alive[s + i];                                             \
                    up[i] &= g->alive[s + i];                                               \
                }                                                                           \
            for (int64_t i = 0; i < m; i++) above += up[i];                                 \
            if (g->live)                                                                    \
                for (int64_t i = 0; i < m; i++) t->revived += up[i] & !g->live[s + i];      \
            t->above += above;                                                              \
            for (int64_t i = 0; i < m; i += 8) {                                            \
                uint64_t word = 0;                                                          \
                memcpy(&word, flag + i, (size_t)(m - i < 8 ? m - i : 8));                   \
                if (!word) continue;                                                        \
                for (int64_t j = i; j < i + 8 && j < m; j++)                                \
                    if (flag[j]) {                                                          \
                        if (t->nc < t->cap) {                                               \
                            int64_t off = g->live && !g->live[s + j] ? FSP_LIVE_OFF : 0;    \
                            t->cidx[t->nc] = (g->base + s + j) | off;                       \
                            cval[t->nc] = vals[j];                                          \
                        }                                                                   \
                        t->nc++;                                                            \
                    }                                                                       \
            }                                                                               \
        }                                                                                   \
    }

GENERIC_RANGE(float, fabsf)
GENERIC_RANGE(double, fabs)

#ifdef FSP_X86
/* Candidate positions of one 32-bit mask of a step starting at ``i`` (bit j: i + j). */
static inline void take_bits(const fsp_segment *g, int64_t i, uint32_t bits, fsp_cursor *t) {
    const float *x = (const float *)g->x, *y = (const float *)g->y;
    float *cval = (float *)t->cval;
    while (bits) {
        int j = __builtin_ctz(bits);
        bits &= bits - 1;
        if (t->nc < t->cap) {
            float v = x[i + j];
            int64_t off = g->live && !g->live[i + j] ? FSP_LIVE_OFF : 0;
            t->cidx[t->nc] = (g->base + i + j) | off;
            cval[t->nc] = g->mode == PLAIN ? v : g->mode == ABS ? fabsf(v) : fabsf(v * y[i + j]);
        }
        t->nc++;
    }
}

/* float32 on AVX2: 32 values a step; keep bytes packed from the compares, candidates from
 * their bit masks. */
__attribute__((target("avx2"))) static void range_avx2(const fsp_segment *g, int64_t s0,
                                                        int64_t s1, float lo, float mid,
                                                        float hi, fsp_cursor *t) {
    const float *x = (const float *)g->x, *y = (const float *)g->y;
    const __m256 vlo = _mm256_set1_ps(lo), vmid = _mm256_set1_ps(mid), vhi = _mm256_set1_ps(hi);
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(g->mode == PLAIN ? -1 : 0x7fffffff));
    const __m256i one = _mm256_set1_epi8(1), zero = _mm256_setzero_si256();
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256 top = _mm256_set1_ps((float)t->vmax); /* a float's value, or -inf: exact */
    int64_t i = s0, above = 0;
    for (; i + 32 <= s1; i += 32) {
        ahead(x + i), ahead(x + i + 16);
        if (g->mode == ABS_PRODUCT) ahead(y + i), ahead(y + i + 16);
        if (g->alive && !(i & 32)) ahead(g->alive + i);
        __m256 v[4];
        for (int q = 0; q < 4; q++) {
            __m256 a = _mm256_loadu_ps(x + i + 8 * q);
            if (g->mode == ABS_PRODUCT) a = _mm256_mul_ps(a, _mm256_loadu_ps(y + i + 8 * q));
            v[q] = _mm256_and_ps(a, sign);
            top = _mm256_max_ps(v[q], top); /* NaN in v[q]: top is kept */
        }
        __m256i gt[4], out[4], km[4];
        for (int q = 0; q < 4; q++) {
            __m256 above_hi = _mm256_cmp_ps(v[q], vhi, _CMP_GT_OQ);
            gt[q] = _mm256_castps_si256(above_hi);
            km[q] = _mm256_castps_si256(_mm256_cmp_ps(v[q], vmid, _CMP_GT_OQ));
            out[q] = _mm256_castps_si256(_mm256_or_ps(above_hi, _mm256_cmp_ps(v[q], vlo, _CMP_LT_OQ)));
        }
        __m256i g8 = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(gt[0], gt[1]), _mm256_packs_epi32(gt[2], gt[3])),
            order);
        __m256i k8 = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(km[0], km[1]), _mm256_packs_epi32(km[2], km[3])),
            order);
        __m256i o8 = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(out[0], out[1]), _mm256_packs_epi32(out[2], out[3])),
            order);
        uint32_t cand = ~(uint32_t)_mm256_movemask_epi8(o8);
        if (g->alive) {
            __m256i live = _mm256_cmpgt_epi8(_mm256_loadu_si256((const __m256i *)(g->alive + i)), zero);
            g8 = _mm256_and_si256(g8, live);
            k8 = _mm256_and_si256(k8, live);
            cand &= (uint32_t)_mm256_movemask_epi8(live);
        }
        if (g->live) {
            __m256i on = _mm256_cmpgt_epi8(_mm256_loadu_si256((const __m256i *)(g->live + i)), zero);
            t->revived += __builtin_popcount((uint32_t)_mm256_movemask_epi8(_mm256_andnot_si256(on, g8)));
        }
        _mm256_storeu_si256((__m256i *)(g->keep + i), _mm256_and_si256(k8, one));
        above += __builtin_popcount((uint32_t)_mm256_movemask_epi8(g8));
        if (cand) take_bits(g, i, cand, t);
    }
    t->above += above;
    float lanes[8];
    _mm256_storeu_ps(lanes, top);
    for (int q = 0; q < 8; q++) t->vmax = lanes[q] > t->vmax ? lanes[q] : t->vmax;
    if (i < s1) range_float(g, i, s1, lo, mid, hi, t);
}

/* The same on SSE2 (every x86-64): 16 values a step. */
static void range_sse2(const fsp_segment *g, int64_t s0, int64_t s1, float lo, float mid,
                       float hi, fsp_cursor *t) {
    const float *x = (const float *)g->x, *y = (const float *)g->y;
    const __m128 vlo = _mm_set1_ps(lo), vmid = _mm_set1_ps(mid), vhi = _mm_set1_ps(hi);
    const __m128 sign = _mm_castsi128_ps(_mm_set1_epi32(g->mode == PLAIN ? -1 : 0x7fffffff));
    const __m128i one = _mm_set1_epi8(1), zero = _mm_setzero_si128();
    __m128 top = _mm_set1_ps((float)t->vmax);
    int64_t i = s0, above = 0;
    for (; i + 16 <= s1; i += 16) {
        ahead(x + i);
        if (g->mode == ABS_PRODUCT) ahead(y + i);
        if (g->alive && !(i & 48)) ahead(g->alive + i);
        __m128 v[4];
        for (int q = 0; q < 4; q++) {
            __m128 a = _mm_loadu_ps(x + i + 4 * q);
            if (g->mode == ABS_PRODUCT) a = _mm_mul_ps(a, _mm_loadu_ps(y + i + 4 * q));
            v[q] = _mm_and_ps(a, sign);
            top = _mm_max_ps(v[q], top);
        }
        __m128i gt[4], out[4], km[4];
        for (int q = 0; q < 4; q++) {
            __m128 above_hi = _mm_cmpgt_ps(v[q], vhi);
            gt[q] = _mm_castps_si128(above_hi);
            km[q] = _mm_castps_si128(_mm_cmpgt_ps(v[q], vmid));
            out[q] = _mm_castps_si128(_mm_or_ps(above_hi, _mm_cmplt_ps(v[q], vlo)));
        }
        __m128i g8 = _mm_packs_epi16(_mm_packs_epi32(gt[0], gt[1]), _mm_packs_epi32(gt[2], gt[3]));
        __m128i k8 = _mm_packs_epi16(_mm_packs_epi32(km[0], km[1]), _mm_packs_epi32(km[2], km[3]));
        __m128i o8 = _mm_packs_epi16(_mm_packs_epi32(out[0], out[1]), _mm_packs_epi32(out[2], out[3]));
        uint32_t cand = (uint32_t)_mm_movemask_epi8(o8) ^ 0xffffu;
        if (g->alive) {
            __m128i live = _mm_cmpgt_epi8(_mm_loadu_si128((const __m128i *)(g->alive + i)), zero);
            g8 = _mm_and_si128(g8, live);
            k8 = _mm_and_si128(k8, live);
            cand &= (uint32_t)_mm_movemask_epi8(live);
        }
        if (g->live) {
            __m128i on = _mm_cmpgt_epi8(_mm_loadu_si128((const __m128i *)(g->live + i)), zero);
            t->revived += __builtin_popcount((uint32_t)_mm_movemask_epi8(_mm_andnot_si128(on, g8)));
        }
        _mm_storeu_si128((__m128i *)(g->keep + i), _mm_and_si128(k8, one));
        above += __builtin_popcount((uint32_t)_mm_movemask_epi8(g8));
        if (cand) take_bits(g, i, cand, t);
    }
    t->above += above;
    float lanes[4];
    _mm_storeu_ps(lanes, top);
    for (int q = 0; q < 4; q++) t->vmax = lanes[q] > t->vmax ? lanes[q] : t->vmax;
    if (i < s1) range_float(g, i, s1, lo, mid, hi, t);
}
#endif

/* float32 values of [s0, s1) as plain scores: AVX2 or SSE2 on x86-64, else generic C. */
static void range_plain_float(const fsp_segment *g, int64_t s0, int64_t s1, float lo,
                              float mid, float hi, fsp_cursor *t) {
#ifdef FSP_X86
    if (__builtin_cpu_supports("avx2"))
        range_avx2(g, s0, s1, lo, mid, hi, t);
    else
        range_sse2(g, s0, s1, lo, mid, hi, t);
    return;
#endif
    range_float(g, s0, s1, lo, mid, hi, t);
}

/* MOVEMENT_SCORES values [s, s + m) into out (branch-free: the compiler vectorizes it). */
static void fill_movement(const fsp_segment *g, int64_t s, int64_t m, float *out) {
    const float *x = (const float *)g->x + s, *y = (const float *)g->y + s;
    const float *z = (const float *)g->z + s;
    const uint8_t *live = g->live + s;
    for (int64_t c = 0; c < m; c += 64) { /* 64 values: 4 lines of each float input */
        int64_t e = m - c < 64 ? m - c : 64;
        for (int q = 0; q < 64; q += 16) ahead(x + c + q), ahead(y + c + q), ahead(z + c + q);
        ahead(live + c);
        for (int64_t i = c; i < c + e; i++)
            out[i] = movement_score_float(x[i], y[i], z[i], live[i]);
    }
}

/* Computed float32 scores (block means, RANDOM, MOVEMENT_SCORES): each block of BLK values
 * is computed into a buffer and compared as a plain segment viewing it, into a flag
 * buffer; the flags (and MOVEMENT_SCORES' values, into ``out``) are then streamed to
 * their places (stream_copy: neither is read again soon). Block means with ``elems``:
 * the flags are spread over the blocks' elements from the data just read (a pruned
 * block ranked, spread_blocks), and those are streamed instead. */
static void range_computed(const fsp_segment *g, int64_t s0, int64_t s1, float lo, float mid,
                           float hi, fsp_cursor *t) {
    float buffer[BLK];
    uint8_t flags[BLK], spread[BLK * MAX_BLOCK_WIDTH]; /* spread: with elems only */
    uint32_t words[BLK];                               /* ranked: pruned blocks' flags */
    for (int64_t s = s0; s < s1; s += BLK) {
        int64_t m = s1 - s < BLK ? s1 - s : BLK, ranked = 0, i = 0;
        float *vals = buffer;
        if (g->mode == RANDOM)
            rng_fill(g->key, s, m, vals);
        else if (g->mode == MOVEMENT_SCORES)
            fill_movement(g, s, m, vals);
        else {
#ifdef FSP_X86
            if (g->elems && g->width == 4 && g->zeros < 4 && __builtin_cpu_supports("avx2"))
                ranked = i = means4_avx2(g, s, m, vals, words);
            else
#endif
                i = fill_means_float(g, s, m, vals);
            for (; i < m; i++) vals[i] = block_mean_float(g, s + i);
        }
        fsp_segment view = *g;
        view.x = vals;
        view.y = NULL;
        view.alive = g->alive ? g->alive + s : NULL;
        view.live = g->live ? g->live + s : NULL;
        view.keep = flags;
        view.base = g->base + s;
        view.n = m;
        view.mode = PLAIN;
        range_plain_float(&view, 0, m, lo, mid, hi, t);
        if (g->elems) {
            for (int64_t b = 0; b < ranked; b++) { /* kept: all four; else its ranks' word */
                uint32_t word = flags[b] ? 0x01010101u : words[b];
                memcpy(spread + 4 * b, &word, 4);
            }
            spread_blocks(flags + ranked, m - ranked, g->width, spread + ranked * g->width,
                          (const float *)g->x + (s + ranked) * g->width, 0,
                          g->mode == BLOCK_L2, g->zeros);
            stream_copy(g->elems + s * g->width, spread, (size_t)(m * g->width));
        } else {
            stream_copy(g->keep + s, flags, (size_t)m);
        }
        if (g->mode == MOVEMENT_SCORES)
            stream_copy((float *)g->out + s, vals, (size_t)m * sizeof(float));
    }
}

/* The pass: its bounds, and each thread's candidate buffer (thread w's at cidx + w * cap,
 * cval + w * cap) and totals. */
typedef struct {
    const fsp_segment *segs;
    int64_t nsegs, cap;
    int dbl;
    double lo, mid, hi;
    int64_t *cidx;
    void *cval;
    fsp_cursor *workers;
} fsp_pass;

/* One task: the range [start, stop) of the concatenation; after it ran, where its
 * candidates went (its thread's buffer, from ``offset``) and how many there were. */
typedef struct {
    const fsp_pass *pass;
    int64_t start, stop, worker, offset, count;
} fsp_part;

/* A thread appends each task's candidates to its own buffer: the tasks it takes ascend,
 * so each buffer is in order, and fsp_keep_pass merges them in task order after. */
static void run_part(void *arg, int64_t worker) {
    fsp_part *part = (fsp_part *)arg;
    const fsp_pass *p = part->pass;
    fsp_cursor *w = &p->workers[worker];
    size_t width = p->dbl ? sizeof(double) : sizeof(float);
    int64_t used = w->nc < p->cap ? w->nc : p->cap;
    fsp_cursor t = {p->cidx + worker * p->cap + used,
                  (char *)p->cval + (size_t)(worker * p->cap + used) * width,
                  p->cap - used, 0, 0, w->vmax, 0};
    for (int64_t k = 0; k < p->nsegs; k++) {
        const fsp_segment *g = &p->segs[k];
        int64_t s0 = part->start - g->base, s1 = part->stop - g->base;
        if (s0 < 0) s0 = 0;
        if (s1 > g->n) s1 = g->n;
        if (s0 >= s1) continue;
        if (g->elems)
            populate_fresh(g->elems + s0 * g->width, (s1 - s0) * g->width);
        else
            populate_fresh(g->keep + s0, s1 - s0);
        if (g->out) populate_fresh((float *)g->out + s0, (s1 - s0) * (int64_t)sizeof(float));
        if (p->dbl)
            range_double(g, s0, s1, p->lo, p->mid, p->hi, &t);
        else if (g->mode >= BLOCK_L1) /* block means, RANDOM and MOVEMENT_SCORES */
            range_computed(g, s0, s1, (float)p->lo, (float)p->mid, (float)p->hi, &t);
        else
            range_plain_float(g, s0, s1, (float)p->lo, (float)p->mid, (float)p->hi, &t);
    }
    stream_fence();
    part->worker = worker;
    part->offset = w->nc;
    part->count = t.nc;
    w->nc += t.nc;
    w->above += t.above;
    w->vmax = t.vmax;
    w->revived += t.revived;
}

/* The pass over ``nsegs`` segments (``total`` elements) on ``threads`` threads, with
 * lo <= mid <= hi (in the values' dtype: the finish compares with the same ``mid``). Thread
 * ``w`` writes its candidates at ``cidx + w * cap`` and ``cval + w * cap`` (at most
 * ``cap``; ``nc[w]`` counts them all), its kept count in ``above[w]``, and the largest
 * value it saw (NaN ignored) in ``vmax[w]`` (+inf: a score is infinite), and in
 * ``*revived`` how many kept-for-sure values lie where a MOVEMENT_SCORES ``live`` is off
 * (the finish counts the candidates' own). When all the
 * candidates fit in ``cap`` (the sum of ``nc`` is at most ``cap``), they are then at
 * ``cidx`` and ``cval``, in order. Returns ``threads`` (clamped). RANDOM and
 * MOVEMENT_SCORES segments are float32 only; the pass writes every MOVEMENT_SCORES value
 * to its ``out``. */
int64_t fsp_keep_pass(const fsp_segment *segs, int64_t nsegs, int64_t total, int64_t dbl,
                      double lo, double mid, double hi, int64_t threads, int64_t *cidx, void *cval,
                      int64_t cap, int64_t *nc, int64_t *above, double *vmax,
                      int64_t *revived) {
    fsp_cursor workers[MAX_THREADS];
    fsp_part parts[MAX_TASKS];
    size_t width = dbl ? sizeof(double) : sizeof(float);
    threads = clamp_threads(threads);
    for (int64_t w = 0; w < threads; w++)
        workers[w] = (fsp_cursor){NULL, NULL, 0, 0, 0, -INFINITY, 0};
    fsp_pass pass = {segs, nsegs, cap, (int)dbl, lo, mid, hi, cidx, cval, workers};
    int64_t count = task_count(total, total, threads);
    for (int64_t k = 0; k < nsegs; k++) {
        if (segs[k].elems)
            advise_fresh(segs[k].elems, segs[k].n * segs[k].width);
        else
            advise_fresh(segs[k].keep, segs[k].n);
        if (segs[k].out) advise_fresh(segs[k].out, segs[k].n * (int64_t)sizeof(float));
    }
    for (int64_t t = 0; t < count; t++)
        parts[t] = (fsp_part){&pass, part_start(total, t, count), part_start(total, t + 1, count),
                              0, 0, 0};
    run_all(run_part, parts, sizeof(fsp_part), count, threads);
    int64_t all = 0;
    *revived = 0;
    for (int64_t w = 0; w < threads; w++) {
        *revived += workers[w].revived;
        nc[w] = workers[w].nc;
        above[w] = workers[w].above;
        vmax[w] = workers[w].vmax;
        all += nc[w];
    }
    if (all > cap) return threads; /* overflow: the caller widens nothing, it selects again */
    /* Merge into thread 0's buffer in task order, the last task first: task t goes to D_t
     * (the candidates of the tasks before it). Thread 0's candidates not yet moved are
     * those of its tasks before t, all below D_t, so no move overwrites one. */
    int64_t at = all;
    for (int64_t t = count - 1; t >= 0; t--) {
        const fsp_part *q = &parts[t];
        at -= q->count;
        memmove(cidx + at, cidx + q->worker * cap + q->offset, (size_t)q->count * sizeof(int64_t));
        memmove((char *)cval + (size_t)at * width,
                (char *)cval + (size_t)(q->worker * cap + q->offset) * width,
                (size_t)q->count * width);
    }
    return threads;
}
