/*
 * dlopened.c: a program that opens libtttrack.so with dlopen (as a Python extension's
 * library is opened) instead of linking it, and reports from several threads.
 *
 *   dlopened LIB THREADS N    opens LIB; each thread: N x (alloc id, free id), ids
 *                             (t<<32)|k; prints "tls static" or "tls dynamic" (where
 *                             the library's thread-local block was placed: the static
 *                             TLS block, next to the thread pointer, or memory the
 *                             loader allocated), then "dropped D"
 *
 * GLIBC_TUNABLES=glibc.rtld.optional_static_tls=0 leaves a library opened later no
 * static TLS, so its block is dynamic.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void (*alloc_fn)(int, uint64_t, int, uint64_t);
static void (*free_fn)(int, uint64_t);
static long N;

static void *pairs_thread(void *arg) {
    uint64_t t = (uint64_t)(uintptr_t)arg;
    for (long k = 0; k < N; k++) {
        uint64_t id = (t << 32) | (uint64_t)k;
        alloc_fn(0, 4096 + (uint64_t)(k & 7), 0, id);
        free_fn(0, id);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: dlopened LIB THREADS N\n");
        return 2;
    }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    alloc_fn = (void (*)(int, uint64_t, int, uint64_t))dlsym(h, "tttrack_alloc");
    free_fn = (void (*)(int, uint64_t))dlsym(h, "tttrack_free");
    uint64_t (*dropped)(void) = (uint64_t (*)(void))dlsym(h, "tttrack_dropped_events");
    if (!alloc_fn || !free_fn || !dropped) {
        fprintf(stderr, "dlsym: %s\n", dlerror());
        return 1;
    }
    int threads = atoi(argv[2]);
    N = atol(argv[3]);
    pthread_t th[64];
    if (threads < 1 || threads > 64) return 2;
    for (int t = 0; t < threads; t++) pthread_create(&th[t], NULL, pairs_thread, (void *)(uintptr_t)t);
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    /* This thread's block of the library's TLS: static TLS lies just below the thread
     * pointer (pthread_self on glibc), dynamic TLS wherever the loader put it. */
    void *block = NULL;
    alloc_fn(0, 1, 0, 1ull << 62);
    free_fn(0, 1ull << 62);
    if (dlinfo(h, RTLD_DI_TLS_DATA, &block) != 0 || !block) {
        fprintf(stderr, "dlinfo: %s\n", dlerror());
        return 1;
    }
    uintptr_t below = (uintptr_t)pthread_self() - (uintptr_t)block;
    printf("tls %s\n", below < (1u << 20) ? "static" : "dynamic");
    printf("dropped %llu\n", (unsigned long long)dropped());
    return 0;
}
