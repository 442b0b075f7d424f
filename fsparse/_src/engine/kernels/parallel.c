/* Running the kernels' tasks in parallel.
 *
 * torch's own OpenMP runtime, when native.py hands it over (fsp_use_openmp): the tasks
 * then run on the threads torch's ops run on, which are awake (a fresh thread on an idle
 * or busy core starts late). Otherwise plain pthreads, joined (blocking, no spinning).
 * Either way each thread takes the next untaken task (one atomic counter) until none is
 * left: on a busy machine, where the OS pauses one of the threads, the others take its
 * share instead of waiting for it at the end (a fixed split of one range per thread ran
 * 3-4x slower under a competing load; see docs/native.md).
 */
#include <pthread.h>

#include "kernels.h"

typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_fn)(void);
static gomp_parallel_fn omp_parallel = NULL;
static omp_int_fn omp_thread_num = NULL;
static int blocking = 0; /* fsp_blocking: pthreads even where torch's runtime is known */

/* On a busy machine (native.py's probe) the kernels run on pthreads that block: torch's
 * OpenMP workers spin for milliseconds after each parallel region, and on a busy machine
 * that spinning takes the cores' time from this process's own next steps (and from the
 * neighbours). */
void fsp_blocking(int64_t on) { __atomic_store_n(&blocking, on != 0, __ATOMIC_RELAXED); }

void fsp_use_openmp(void *parallel, void *thread_num, void *num_threads) {
    (void)num_threads; /* the team's size is not needed: threads take tasks until none is left */
    omp_parallel = (gomp_parallel_fn)parallel;
    omp_thread_num = (omp_int_fn)thread_num;
}

typedef struct {
    fsp_work fn;
    char *tasks;
    size_t size;
    int64_t count, next;
} fsp_team;

static void take_tasks(fsp_team *team, int64_t worker) {
    for (;;) {
        int64_t t = __atomic_fetch_add(&team->next, 1, __ATOMIC_RELAXED);
        if (t >= team->count) return;
        team->fn(team->tasks + (size_t)t * team->size, worker);
    }
}

static void team_body(void *arg) { take_tasks((fsp_team *)arg, omp_thread_num()); }

typedef struct {
    fsp_team *team;
    int64_t worker;
} fsp_member;

static void *member_body(void *arg) {
    fsp_member *m = (fsp_member *)arg;
    take_tasks(m->team, m->worker);
    return NULL;
}

void run_all(fsp_work fn, void *tasks, size_t size, int64_t count, int64_t workers) {
    fsp_team team = {fn, (char *)tasks, size, count, 0};
    workers = workers < count ? workers : count;
    workers = clamp_threads(workers);
    if (workers <= 1) {
        take_tasks(&team, 0);
        return;
    }
    if (omp_parallel && omp_thread_num && !__atomic_load_n(&blocking, __ATOMIC_RELAXED)) {
        omp_parallel(team_body, &team, (unsigned)workers, 0);
        return;
    }
    pthread_t ids[MAX_THREADS];
    fsp_member members[MAX_THREADS];
    int started[MAX_THREADS];
    for (int64_t w = 1; w < workers; w++) {
        members[w] = (fsp_member){&team, w};
        started[w] = pthread_create(&ids[w], NULL, member_body, &members[w]) == 0;
    }
    take_tasks(&team, 0); /* a thread that failed to start leaves its tasks to this one */
    for (int64_t w = 1; w < workers; w++)
        if (started[w]) pthread_join(ids[w], NULL);
}
