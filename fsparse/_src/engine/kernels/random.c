/* The counter-based uniform stream of counter_rng.py, filled natively (bit for bit the
 * torch path's values: the tests compare). */
#include "kernels.h"

/* One block-key run: positions lo .. lo + n - 1 of one 2**32 block. Plain 32-bit integer
 * code, which the compiler vectorizes (AVX2's 8-lane multiply in the clone below). */
#define RUN_BODY                                                                             \
    for (int64_t i = 0; i < n; i++) out[i] = rng_value(k1, k2, lo + (uint32_t)i);

static void run_plain(uint32_t k1, uint32_t k2, uint32_t lo, int64_t n, float *out) {
    RUN_BODY
}

#ifdef FSP_X86
__attribute__((target("avx2"))) static void run_avx2(uint32_t k1, uint32_t k2, uint32_t lo,
                                                      int64_t n, float *out) {
    RUN_BODY
}
#endif

void rng_fill(uint64_t key, int64_t start, int64_t n, float *out) {
    while (n > 0) {
        uint64_t at = (uint64_t)start;
        uint32_t k1, k2, lo = (uint32_t)at;
        int64_t left = (int64_t)((1ull << 32) - lo), m = n < left ? n : left;
        rng_block_keys(key, at >> 32, &k1, &k2);
#ifdef FSP_X86
        if (__builtin_cpu_supports("avx2"))
            run_avx2(k1, k2, lo, m, out);
        else
#endif
            run_plain(k1, k2, lo, m, out);
        start += m;
        out += m;
        n -= m;
    }
}

typedef struct {
    uint64_t key;
    int64_t start, n;
    float *out;
} fsp_fill;

static void run_fill(void *arg, int64_t worker) {
    fsp_fill *f = (fsp_fill *)arg;
    (void)worker;
    populate_fresh(f->out, f->n * (int64_t)sizeof(float));
    rng_fill(f->key, f->start, f->n, f->out);
}

/* Values start .. start + n - 1 of stream ``key`` into out, in ``threads`` parts. */
void fsp_uniform(uint64_t key, int64_t start, int64_t n, float *out, int64_t threads) {
    fsp_fill parts[MAX_TASKS];
    int64_t count = task_count(n, n, threads);
    advise_fresh(out, n * (int64_t)sizeof(float));
    for (int64_t t = 0; t < count; t++) {
        int64_t a = part_start(n, t, count), b = part_start(n, t + 1, count);
        parts[t] = (fsp_fill){key, start + a, b - a, out + a};
    }
    run_all(run_fill, parts, sizeof(fsp_fill), count, threads);
}
