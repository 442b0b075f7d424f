/* Elementwise score updates (native.py): movement pruning's accumulated score,
 * out = (live ? -(g * w) : +0.0) + s, the same IEEE operations in the same order as the
 * torch path (fsparse/pruners/_movement.py), into a fresh tensor. */
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
