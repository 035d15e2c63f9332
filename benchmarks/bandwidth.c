// Read-bandwidth meter for the decode benchmarks: T threads stream-read their contiguous share
// of one buffer (default 2 GiB, touched beforehand) and sum it, several passes; prints one JSON
// line with the best and the median pass in GB/s (1e9 bytes/s). Built by benchmarks/common.py:
//   cc -O3 -march=native -pthread bandwidth.c -o bandwidth && ./bandwidth THREADS [MiB] [PASSES]
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const uint64_t *  p;
    size_t            n;
    uint64_t          sum;
    pthread_barrier_t * start;
} job;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void * reader(void * arg) {
    job * j = (job *) arg;
    pthread_barrier_wait(j->start);
    // eight independent sums, so the adds never limit the loads (the compiler vectorizes them)
    uint64_t s[8] = { 0 };
    for (size_t i = 0; i + 8 <= j->n; i += 8) {
        for (int k = 0; k < 8; k++) {
            s[k] += j->p[i + k];
        }
    }
    uint64_t t = 0;
    for (int k = 0; k < 8; k++) {
        t += s[k];
    }
    j->sum = t;
    pthread_barrier_wait(j->start);
    return NULL;
}

static int cmp(const void * a, const void * b) {
    const double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

int main(int argc, char ** argv) {
    const int    threads = argc > 1 ? atoi(argv[1]) : 1;
    const size_t mib     = argc > 2 ? (size_t) atol(argv[2]) : 2048;
    const int    passes  = argc > 3 ? atoi(argv[3]) : 5;
    if (threads < 1 || threads > 256 || mib < 64 || passes < 1 || passes > 100) {
        fprintf(stderr, "usage: %s THREADS [MiB >= 64] [PASSES]\n", argv[0]);
        return 2;
    }
    const size_t bytes = mib << 20;
    uint64_t *   buf   = (uint64_t *) aligned_alloc(4096, bytes);
    if (!buf) {
        fprintf(stderr, "cannot allocate %zu MiB\n", mib);
        return 1;
    }
    for (size_t i = 0; i < bytes / 8; i++) {
        buf[i] = i * 0x9e3779b97f4a7c15ull;  // touch every page, non-zero content
    }
    const size_t per = bytes / 8 / (size_t) threads / 8 * 8;
    double *     gbps = (double *) calloc((size_t) passes, sizeof(double));
    uint64_t     check = 0;
    for (int pass = 0; pass < passes; pass++) {
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, (unsigned) threads + 1);
        pthread_t tid[256];
        job       jobs[256];
        for (int t = 0; t < threads; t++) {
            jobs[t] = (job) { buf + (size_t) t * per, per, 0, &start };
            pthread_create(&tid[t], NULL, reader, &jobs[t]);
        }
        pthread_barrier_wait(&start);
        const double t0 = now();
        pthread_barrier_wait(&start);
        const double t1 = now();
        for (int t = 0; t < threads; t++) {
            pthread_join(tid[t], NULL);
            check += jobs[t].sum;
        }
        pthread_barrier_destroy(&start);
        gbps[pass] = (double) per * 8 * threads / (t1 - t0) / 1e9;
    }
    double best = 0;
    for (int pass = 0; pass < passes; pass++) {
        best = gbps[pass] > best ? gbps[pass] : best;
    }
    qsort(gbps, (size_t) passes, sizeof(double), cmp);
    printf("{\"threads\": %d, \"mib\": %zu, \"passes\": %d, \"best_gbps\": %.3f, \"median_gbps\": %.3f, "
           "\"checksum\": %llu}\n", threads, mib, passes, best, gbps[passes / 2], (unsigned long long) (check & 0xffff));
    free(gbps);
    free(buf);
    return 0;
}
