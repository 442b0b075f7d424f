/* Running the kernels' tasks in parallel.
 *
 * torch's own OpenMP runtime, when native.py hands it over (fsp_use_openmp): the tasks
 * then run on the threads torch's ops run on, which are awake (a fresh thread on an idle
 * or busy core starts late). Otherwise plain pthreads, joined (blocking, no spinning).
 */
#include <pthread.h>

#include "kernels.h"

typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_fn)(void);
static gomp_parallel_fn omp_parallel = NULL;
static omp_int_fn omp_thread_num = NULL, omp_num_threads = NULL;

void fsp_use_openmp(void *parallel, void *thread_num, void *num_threads) {
    omp_parallel = (gomp_parallel_fn)parallel;
    omp_thread_num = (omp_int_fn)thread_num;
    omp_num_threads = (omp_int_fn)num_threads;
}

typedef struct {
    void *(*fn)(void *);
    char *tasks;
    size_t size;
    int64_t count;
} fsp_team;

static void team_body(void *arg) {
    fsp_team *team = (fsp_team *)arg;
    int64_t me = omp_thread_num(), width = omp_num_threads();
    for (int64_t t = me; t < team->count; t += width) team->fn(team->tasks + (size_t)t * team->size);
}

void run_all(void *(*fn)(void *), void *tasks, size_t size, int64_t count) {
    if (count <= 1) {
        if (count == 1) fn(tasks);
        return;
    }
    if (omp_parallel && omp_thread_num && omp_num_threads) {
        fsp_team team = {fn, (char *)tasks, size, count};
        omp_parallel(team_body, &team, (unsigned)count, 0);
        return;
    }
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS];
    for (int64_t t = 1; t < count; t++)
        started[t] = pthread_create(&ids[t], NULL, fn, (char *)tasks + (size_t)t * size) == 0;
    fn(tasks);
    for (int64_t t = 1; t < count; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else
            fn((char *)tasks + (size_t)t * size); /* no thread: run it here */
    }
}
