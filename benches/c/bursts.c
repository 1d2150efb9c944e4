/*
 * bursts.c: the cost of an event to a C program in bursts, through libtttrack.so
 * (linked, as an instrumented TT-Metal build is) and through a minimal ring of the
 * same 32-byte records in the same program, bursts of the two alternating.
 *
 *   bursts PAIRS     after 64 pairs of warm-up, PAIRS pairs of bursts of 1024 events,
 *                    2 ms apart; prints "ours NS ring NS events N" (medians, ns per
 *                    event; N: events reported through libtttrack.so)
 *
 * The minimal ring: a single-producer ring of 32768 slots, its head and tail on their
 * own cache lines, the producer caching the tail, drained by a thread that lets a
 * batch pile up (it sleeps 200 us between drains), as the aggregator does.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "tttrack.h"

#define BURST 1024
#define CAP 32768u

struct ring {
    _Alignas(64) _Atomic uint64_t head;
    _Alignas(64) _Atomic uint64_t tail;
    _Alignas(64) uint64_t slots[CAP][4];
};
static struct ring ring;
static _Atomic int stop;
static uint64_t cached_tail;

static void *drain(void *arg) {
    (void)arg;
    uint64_t sum = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t h = atomic_load_explicit(&ring.head, memory_order_acquire);
        uint64_t t = atomic_load_explicit(&ring.tail, memory_order_relaxed);
        for (; t < h; t++) sum += ring.slots[t & (CAP - 1)][2];
        atomic_store_explicit(&ring.tail, t, memory_order_release);
        usleep(200);
    }
    return (void *)(uintptr_t)sum;
}

static inline void ring_push(uint64_t i) {
    uint64_t h = atomic_load_explicit(&ring.head, memory_order_relaxed);
    while (h - cached_tail >= CAP) cached_tail = atomic_load_explicit(&ring.tail, memory_order_acquire);
    uint64_t *s = ring.slots[h & (CAP - 1)];
    s[0] = i;
    s[1] = 1 + (i & 1);
    s[2] = 4096;
    s[3] = 0x1000 + (i >> 1);
    atomic_store_explicit(&ring.head, h + 1, memory_order_release);
}

static inline void ours(uint64_t i) {
    if ((i & 1) == 0)
        tttrack_alloc(0, 4096, TTTRACK_BUFFER_DRAM, 0x1000 + (i >> 1));
    else
        tttrack_free(0, 0x1000 + (i >> 1));
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

int main(int argc, char **argv) {
    long pairs = argc > 1 ? atol(argv[1]) : 2000;
    if (pairs < 1) pairs = 1;
    double *o = calloc((size_t)pairs, sizeof *o), *r = calloc((size_t)pairs, sizeof *r);
    pthread_t th;
    pthread_create(&th, NULL, drain, NULL);
    uint64_t i = 0, j = 0;
    for (long p = -64; p < pairs; p++) {
        usleep(2000);
        double t0 = now_ns();
        for (int k = 0; k < BURST; k++) ours(i++);
        double t1 = now_ns();
        usleep(2000);
        double t2 = now_ns();
        for (int k = 0; k < BURST; k++) ring_push(j++);
        double t3 = now_ns();
        if (p >= 0) {
            o[p] = (t1 - t0) / BURST;
            r[p] = (t3 - t2) / BURST;
        }
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    qsort(o, (size_t)pairs, sizeof *o, cmp);
    qsort(r, (size_t)pairs, sizeof *r, cmp);
    printf("ours %.2f ring %.2f events %llu dropped %llu\n", o[pairs / 2], r[pairs / 2],
           (unsigned long long)i, (unsigned long long)tttrack_dropped_events());
    return 0;
}
