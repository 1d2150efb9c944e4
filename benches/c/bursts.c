/*
 * bursts.c: the cost of an event to a C program in bursts, through libtttrack.so
 * (linked, as an instrumented TT-Metal build is), against the minimal ring of
 * minimal_ring.h twice in the same program: behind a shared library's call with the
 * same signatures (minimal_ring.c, linked the same way), and inlined into the loop
 * (no call at all). Bursts of the three take turns.
 *
 *   bursts ROUNDS    after 64 rounds of warm-up, ROUNDS rounds of three bursts of
 *                    1024 events, each 2 ms after the last; prints
 *                    "ours NS library NS inline NS events N dropped D" (medians, ns per
 *                    event; N: events reported through libtttrack.so, D: of them
 *                    not delivered)
 *
 * Both rings are drained by one thread that lets a batch pile up (it sleeps 200 us
 * between drains), as the aggregator does.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "minimal_ring.h"
#include "tttrack.h"

#define BURST 1024

/* The library's ring (minimal_ring.c). */
void minimal_ring_alloc(int device, uint64_t size, int buffer_type, uint64_t id);
void minimal_ring_free(int device, uint64_t id);
uint64_t minimal_ring_drain(void);

static _Atomic int stop;

static void *drain(void *arg) {
    (void)arg;
    uint64_t sum = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        sum += ring_drain() + minimal_ring_drain();
        usleep(200);
    }
    return (void *)(uintptr_t)sum;
}

/* Event i of a burst: alloc and free alternate, the same content for all three. */
static inline void ours(uint64_t i) {
    if ((i & 1) == 0)
        tttrack_alloc(0, 4096, TTTRACK_BUFFER_DRAM, 0x1000 + (i >> 1));
    else
        tttrack_free(0, 0x1000 + (i >> 1));
}

static inline void library(uint64_t i) {
    if ((i & 1) == 0)
        minimal_ring_alloc(0, 4096, TTTRACK_BUFFER_DRAM, 0x1000 + (i >> 1));
    else
        minimal_ring_free(0, 0x1000 + (i >> 1));
}

static inline void inlined(uint64_t i) {
    if ((i & 1) == 0)
        ring_push(ring_kind_word(1, TTTRACK_BUFFER_DRAM, 0), 4096, 0x1000 + (i >> 1));
    else
        ring_push(ring_kind_word(2, 0, 0), 0, 0x1000 + (i >> 1));
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, long n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

/* One burst of `f`, after 2 ms idle; ns per event. */
#define BURST_OF(f, counter)                                       \
    ({                                                             \
        usleep(2000);                                              \
        double t0 = now_ns();                                      \
        for (int e_ = 0; e_ < BURST; e_++) f(counter++);           \
        (now_ns() - t0) / BURST;                                   \
    })

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 2000;
    if (rounds < 1) rounds = 1;
    double *o = calloc((size_t)rounds, sizeof *o), *l = calloc((size_t)rounds, sizeof *l),
           *n = calloc((size_t)rounds, sizeof *n);
    if (!o || !l || !n) return 1;
    pthread_t th;
    pthread_create(&th, NULL, drain, NULL);
    uint64_t i = 0, j = 0, k = 0;
    for (long r = -64; r < rounds; r++) {
        double a = BURST_OF(ours, i), b = BURST_OF(library, j), c = BURST_OF(inlined, k);
        if (r >= 0) {
            o[r] = a;
            l[r] = b;
            n[r] = c;
        }
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    printf("ours %.2f library %.2f inline %.2f events %llu dropped %llu\n", median(o, rounds),
           median(l, rounds), median(n, rounds), (unsigned long long)i,
           (unsigned long long)tttrack_dropped_events());
    return 0;
}
