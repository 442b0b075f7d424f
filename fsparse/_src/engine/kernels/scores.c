/* Elementwise updates into fresh tensors (native.py), the torch path's values bit for bit:
 * movement pruning's accumulated score, out = (live ? -(g * w) : +0.0) + s, in the same
 * IEEE operations and order as fsparse/pruners/_movement.py; and weights with the revived
 * ones zeroed, out = (new & !old) ? +0.0 : w (fsparse/pruners/_ranked.py). */
#include "kernels.h"

typedef struct {
    const void *s, *g, *w;
    const uint8_t *live; /* NULL: every weight is live */
    void *out;
    int64_t n, dbl;
} fsp_movement_range;

#define MOVEMENT(T)                                                                          \
    static void movement_##T(const fsp_movement_range *r) {                                 \
        const T *s = (const T *)r->s, *g = (const T *)r->g, *w = (const T *)r->w;           \
        T *out = (T *)r->out;                                                               \
        if (r->live)                                                                        \
            for (int64_t i = 0; i < r->n; i++) {                                            \
                T delta = -(g[i] * w[i]);                                                   \
                out[i] = (r->live[i] ? delta : (T)0) + s[i];                                \
            }                                                                               \
        else                                                                                \
            for (int64_t i = 0; i < r->n; i++) out[i] = -(g[i] * w[i]) + s[i];              \
    }
MOVEMENT(float)
MOVEMENT(double)

static void *run_movement(void *arg) {
    fsp_movement_range *r = (fsp_movement_range *)arg;
    populate_fresh(r->out, r->n * (r->dbl ? 8 : 4));
    if (r->dbl)
        movement_double(r);
    else
        movement_float(r);
    return NULL;
}

/* The movement score of n weights (float, or double with ``dbl``) into out, in
 * ``threads`` ranges. */
void fsp_movement(const void *s, const void *g, const void *w, const uint8_t *live, void *out,
                  int64_t n, int64_t dbl, int64_t threads) {
    fsp_movement_range parts[MAX_THREADS];
    size_t size = dbl ? sizeof(double) : sizeof(float);
    threads = clamp_threads(threads);
    for (int64_t t = 0; t < threads; t++) {
        int64_t a = part_start(n, t, threads), b = part_start(n, t + 1, threads);
        size_t at = (size_t)a * size;
        parts[t] = (fsp_movement_range){(const char *)s + at, (const char *)g + at,
                                        (const char *)w + at, live ? live + a : NULL,
                                        (char *)out + at, b - a, dbl};
    }
    run_all(run_movement, parts, sizeof(fsp_movement_range), threads);
}

typedef struct {
    const void *w;
    const uint8_t *old, *new_;
    void *out;
    int64_t n, dbl;
} fsp_revived_range;

#define REVIVED(T)                                                                           \
    static void revived_##T(const fsp_revived_range *r) {                                   \
        const T *w = (const T *)r->w;                                                       \
        T *out = (T *)r->out;                                                               \
        for (int64_t i = 0; i < r->n; i++)                                                  \
            out[i] = (r->new_[i] & (uint8_t)(r->old[i] ^ 1) & 1) ? (T)0 : w[i];             \
    }
REVIVED(float)
REVIVED(double)

static void *run_revived(void *arg) {
    fsp_revived_range *r = (fsp_revived_range *)arg;
    populate_fresh(r->out, r->n * (r->dbl ? 8 : 4));
    if (r->dbl)
        revived_double(r);
    else
        revived_float(r);
    return NULL;
}

/* w (n floats, or doubles with ``dbl``) into out, +0.0 where ``new_`` is set and ``old``
 * is not (the weights an update revived), in ``threads`` ranges. */
void fsp_zero_revived(const void *w, const uint8_t *old, const uint8_t *new_, void *out,
                      int64_t n, int64_t dbl, int64_t threads) {
    fsp_revived_range parts[MAX_THREADS];
    size_t size = dbl ? sizeof(double) : sizeof(float);
    threads = clamp_threads(threads);
    for (int64_t t = 0; t < threads; t++) {
        int64_t a = part_start(n, t, threads), b = part_start(n, t + 1, threads);
        size_t at = (size_t)a * size;
        parts[t] = (fsp_revived_range){(const char *)w + at, old + a, new_ + a,
                                       (char *)out + at, b - a, dbl};
    }
    run_all(run_revived, parts, sizeof(fsp_revived_range), threads);
}
