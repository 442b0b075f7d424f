/* Elementwise updates into fresh tensors (native.py), the torch path's values bit for bit:
 * movement pruning's accumulated score, out = (live ? -(g * w) : +0.0) + s, in the same
 * IEEE operations and order as fsparse/pruners/_movement.py; weights with the revived
 * ones zeroed, out = (new & !old) ? +0.0 : w (fsparse/pruners/_ranked.py); and masked
 * data (engine/masked.py), out = x * (T)keep (sparsified's product, -0.0 and NaN as the
 * multiply gives them) or out = keep ? x : +0.0 (apply_masks' select). */
#include <string.h>

#include "kernels.h"

enum { MOVEMENT = 0, REVIVED = 1, PRODUCT = 2, SELECT = 3 };

/* One range of an elementwise update: values ``in`` (s, g, w for MOVEMENT; w for
 * REVIVED), flag bytes ``flags`` (live; old, new), n outputs at ``out``. */
typedef struct {
    const void *in[3];
    const uint8_t *flags[2];
    void *out;
    int64_t n, dbl, op;
} fsp_elementwise;

/* The selects are bit masks (all ones where the value is taken, else zero, which gives
 * +0.0), so the loops are branch-free and vectorize whatever the flags' pattern; a mask
 * select is exactly the ternary's value. */
#define UPDATES(T)                                                                           \
    static void movement_##T(const fsp_elementwise *r) {                                    \
        const T *s = (const T *)r->in[0], *g = (const T *)r->in[1], *w = (const T *)r->in[2]; \
        const uint8_t *live = r->flags[0];                                                  \
        T *out = (T *)r->out;                                                               \
        for (int64_t i = 0; i < r->n; i++)                                                  \
            out[i] = movement_score_##T(s[i], g[i], w[i], live[i]);                         \
    }                                                                                       \
    static void revived_##T(const fsp_elementwise *r) {                                     \
        const T *w = (const T *)r->in[0];                                                   \
        const uint8_t *old = r->flags[0], *new_ = r->flags[1];                              \
        T *out = (T *)r->out;                                                               \
        for (int64_t i = 0; i < r->n; i++)                                                  \
            out[i] = masked_##T(w[i], (uint8_t)(~new_[i] | old[i]));                        \
    }                                                                                       \
    static void product_##T(const fsp_elementwise *r, int64_t i) {                          \
        const T *x = (const T *)r->in[0];                                                   \
        const uint8_t *keep = r->flags[0];                                                  \
        T *out = (T *)r->out;                                                               \
        for (; i < r->n; i++) out[i] = x[i] * (T)(int)(keep[i] & 1);                          \
    }                                                                                       \
    static void select_##T(const fsp_elementwise *r, int64_t i) {                           \
        const T *x = (const T *)r->in[0];                                                   \
        const uint8_t *keep = r->flags[0];                                                  \
        T *out = (T *)r->out;                                                               \
        for (; i < r->n; i++) out[i] = masked_##T(x[i], keep[i]);                           \
    }
UPDATES(float)
UPDATES(double)

#ifdef FSP_X86
/* float32 masked data on AVX2, 8 values a step: the keep bytes widened to 0/1 floats (the
 * product) or to all-ones/zero lanes (the select). Returns the values done. */
__attribute__((target("avx2"))) static int64_t masked_avx2(const fsp_elementwise *r) {
    const float *x = (const float *)r->in[0];
    const uint8_t *keep = r->flags[0];
    float *out = (float *)r->out;
    const __m256i one = _mm256_set1_epi32(1), none = _mm256_setzero_si256();
    int select = r->op == SELECT;
    int64_t i = 0;
    for (; i + 8 <= r->n; i += 8) {
        uint64_t bytes;
        memcpy(&bytes, keep + i, 8);
        __m256i k = _mm256_and_si256(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)bytes)), one);
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 o = select ? _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(k, none)), v)
                          : _mm256_mul_ps(v, _mm256_cvtepi32_ps(k));
        _mm256_storeu_ps(out + i, o);
    }
    return i;
}
#endif

static void masked_data_float(const fsp_elementwise *r) {
    int64_t i = 0;
#ifdef FSP_X86
    if (__builtin_cpu_supports("avx2")) i = masked_avx2(r);
#endif
    if (r->op == SELECT)
        select_float(r, i);
    else
        product_float(r, i);
}

static void run_elementwise(void *arg, int64_t worker) {
    fsp_elementwise *r = (fsp_elementwise *)arg;
    (void)worker;
    populate_fresh(r->out, r->n * (r->dbl ? 8 : 4));
    if (r->op == MOVEMENT) {
        if (r->dbl)
            movement_double(r);
        else
            movement_float(r);
    } else if (r->op >= PRODUCT) {
        if (!r->dbl)
            masked_data_float(r);
        else if (r->op == SELECT)
            select_double(r, 0);
        else
            product_double(r, 0);
    } else if (r->dbl) {
        revived_double(r);
    } else {
        revived_float(r);
    }
}

/* ``whole`` split into contiguous ranges, run in parallel on ``threads`` threads. */
static void run_split(const fsp_elementwise *whole, int64_t threads) {
    fsp_elementwise parts[MAX_TASKS];
    size_t size = whole->dbl ? sizeof(double) : sizeof(float);
    int64_t count = task_count(whole->n, whole->n, threads);
    advise_fresh(whole->out, whole->n * (int64_t)size);
    for (int64_t t = 0; t < count; t++) {
        int64_t a = part_start(whole->n, t, count), b = part_start(whole->n, t + 1, count);
        fsp_elementwise *p = &parts[t];
        *p = *whole;
        for (int k = 0; k < 3; k++)
            if (p->in[k]) p->in[k] = (const char *)p->in[k] + (size_t)a * size;
        for (int k = 0; k < 2; k++)
            if (p->flags[k]) p->flags[k] += a;
        p->out = (char *)p->out + (size_t)a * size;
        p->n = b - a;
    }
    run_all(run_elementwise, parts, sizeof(fsp_elementwise), count, threads);
}

/* The movement score of n weights (float, or double with ``dbl``) into out. */
void fsp_movement(const void *s, const void *g, const void *w, const uint8_t *live, void *out,
                  int64_t n, int64_t dbl, int64_t threads) {
    fsp_elementwise whole = {{s, g, w}, {live, NULL}, out, n, dbl, MOVEMENT};
    run_split(&whole, threads);
}

/* w (n floats, or doubles with ``dbl``) into out, +0.0 where ``new_`` is set and ``old``
 * is not (the weights an update revived). */
void fsp_zero_revived(const void *w, const uint8_t *old, const uint8_t *new_, void *out,
                      int64_t n, int64_t dbl, int64_t threads) {
    fsp_elementwise whole = {{w, NULL, NULL}, {old, new_}, out, n, dbl, REVIVED};
    run_split(&whole, threads);
}

/* x (n floats, or doubles with ``dbl``) masked by the bool bytes ``keep`` into out:
 * x * keep (as 0 or 1), or with ``select`` keep ? x : +0.0. */
void fsp_masked(const void *x, const uint8_t *keep, void *out, int64_t n, int64_t dbl,
                int64_t select, int64_t threads) {
    fsp_elementwise whole = {{x, NULL, NULL}, {keep, NULL}, out, n, dbl, select ? SELECT : PRODUCT};
    run_split(&whole, threads);
}
