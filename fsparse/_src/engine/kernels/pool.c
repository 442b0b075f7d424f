/* Recycled memory for large fresh outputs (pool.py).
 *
 * A fresh tensor of hundreds of MB gets new pages from the OS on every call (glibc maps
 * every allocation over 32 MiB on its own), and first-touching them costs more than the
 * pass that fills them (docs/native.md). Here such a tensor is a DLPack tensor over one
 * of our own blocks (anonymous mappings, huge pages advised), and torch hands the block
 * back through the DLPack deleter once the tensor's storage is freed: when no tensor,
 * view or state refers to it any more. The next output of the same size takes it, its
 * pages already in place. Blocks nobody uses are cached up to a cap, the oldest beyond it
 * unmapped; fsp_pool_limit(0) unmaps them all. No Python headers: the capsule is made by
 * pool.py.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels.h"

/* DLPack's ABI (dlpack.h, unversioned): what torch.from_dlpack reads. */
typedef struct {
    int32_t device_type, device_id;
} fsp_dl_device;
typedef struct {
    uint8_t code, bits;
    uint16_t lanes;
} fsp_dl_dtype;
typedef struct fsp_dl_managed {
    void *data;
    fsp_dl_device device;
    int32_t ndim;
    fsp_dl_dtype dtype;
    int64_t *shape, *strides;
    uint64_t byte_offset;
    void *manager_ctx;
    void (*deleter)(struct fsp_dl_managed *);
} fsp_dl_managed;

enum { DL_CPU = 1, MAX_DIMS = 16 };
#define BLOCK_ALIGN ((size_t)2 << 20) /* block sizes, and their starts: 2 MiB (huge pages) */

/* One block: its mapping, and the tensor made over it (shape stored here). */
typedef struct fsp_block {
    void *data;
    size_t bytes;
    struct fsp_block *next; /* in the cache: the next older one */
    fsp_dl_managed tensor;
    int64_t shape[MAX_DIMS];
} fsp_block;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static fsp_block *cache = NULL; /* newest first */
static size_t cached = 0, cap = 0;

/* fork() while another thread holds the lock (ctypes calls run without the GIL, and a
 * DataLoader forks its workers from the main thread) would leave the child's copy locked
 * for good, and its first pool call, or a pool tensor it frees, would hang. So a fork
 * takes the lock first and both sides release it after: the child starts with the cache
 * unlocked and consistent. */
static void fork_prepare(void) { pthread_mutex_lock(&lock); }
static void fork_release(void) { pthread_mutex_unlock(&lock); }
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_handlers(void) { pthread_atfork(fork_prepare, fork_release, fork_release); }

static void locked(void) {
    pthread_once(&fork_once, fork_handlers);
    pthread_mutex_lock(&lock);
}

/* Unmap a list of blocks; returns their bytes. */
static int64_t unmap_all(fsp_block *b) {
    int64_t bytes = 0;
    while (b) {
        fsp_block *next = b->next;
        bytes += (int64_t)b->bytes;
        munmap(b->data, b->bytes);
        free(b);
        b = next;
    }
    return bytes;
}

/* The cache's blocks beyond the cap, taken out of it (caller holds the lock). */
static fsp_block *over_cap(void) {
    fsp_block **at = &cache, *out = NULL;
    size_t kept = 0;
    while (*at) {
        if (kept + (*at)->bytes <= cap) {
            kept += (*at)->bytes;
            at = &(*at)->next;
        } else {
            fsp_block *b = *at;
            *at = b->next;
            cached -= b->bytes;
            b->next = out;
            out = b;
        }
    }
    return out;
}

static void give_back(fsp_dl_managed *t) {
    fsp_block *b = (fsp_block *)t->manager_ctx, *drop;
    locked();
    b->next = cache;
    cache = b;
    cached += b->bytes;
    drop = over_cap();
    pthread_mutex_unlock(&lock);
    unmap_all(drop);
}

static fsp_block *take(size_t bytes) {
    locked();
    for (fsp_block **at = &cache; *at; at = &(*at)->next)
        if ((*at)->bytes == bytes) {
            fsp_block *b = *at;
            *at = b->next;
            cached -= bytes;
            pthread_mutex_unlock(&lock);
            return b;
        }
    pthread_mutex_unlock(&lock);
    fsp_block *b = (fsp_block *)calloc(1, sizeof(fsp_block));
    if (!b) return NULL;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(b);
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    b->data = p;
    b->bytes = bytes;
    return b;
}

/* A DLPack tensor of ``ndim`` dims ``shape`` (contiguous, CPU) and dtype (code, bits) over
 * a block of at least ``nbytes``: a cached one of the same rounded size, else a new
 * mapping. NULL if there is no memory or too many dims. Its deleter returns the block. */
void *fsp_pool_tensor(int64_t nbytes, int64_t code, int64_t bits, int64_t ndim,
                      const int64_t *shape) {
    if (ndim < 0 || ndim > MAX_DIMS || nbytes < 0) return NULL;
    size_t bytes = ((size_t)nbytes + BLOCK_ALIGN - 1) / BLOCK_ALIGN * BLOCK_ALIGN;
    fsp_block *b = take(bytes ? bytes : BLOCK_ALIGN);
    if (!b) return NULL;
    memcpy(b->shape, shape, (size_t)ndim * sizeof(int64_t));
    b->next = NULL;
    b->tensor = (fsp_dl_managed){b->data, {DL_CPU, 0}, (int32_t)ndim,
                                 {(uint8_t)code, (uint8_t)bits, 1}, b->shape, NULL, 0, b,
                                 give_back};
    return &b->tensor;
}

/* Give back a tensor that was never handed to torch (pool.py, when from_dlpack refused). */
void fsp_pool_drop(void *tensor) { give_back((fsp_dl_managed *)tensor); }

/* Cache at most ``bytes`` of unused blocks: the oldest beyond it are unmapped now (returns
 * their bytes). */
int64_t fsp_pool_limit(int64_t bytes) {
    locked();
    cap = bytes > 0 ? (size_t)bytes : 0;
    fsp_block *drop = over_cap();
    pthread_mutex_unlock(&lock);
    return unmap_all(drop);
}

/* Bytes of unused blocks the cache holds now. */
int64_t fsp_pool_cached(void) {
    locked();
    int64_t out = (int64_t)cached;
    pthread_mutex_unlock(&lock);
    return out;
}
