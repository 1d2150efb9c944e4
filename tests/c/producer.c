/*
 * producer.c: a real multi-threaded process reporting through libtttrack.so's C ABI,
 * driven by the integration tests.
 *
 *   producer pairs THREADS N      each thread: N x (alloc id, free id), ids (t<<32)|k
 *   producer keep THREADS N       each thread: N allocs that stay live, then exit
 *   producer handoff ROUNDS       thread A allocs X, B frees X, A allocs X again...
 *   producer fork N               N allocs, fork; child N allocs of its own, sleeps 2 s
 *   producer burst N              one thread: N allocs back to back, prints dropped
 *   producer churn THREADS N      THREADS threads one after another, N allocs each
 *   producer late THREADS N       as churn, and each thread's last alloc comes from a
 *                                 thread-specific data destructor (after the library's
 *                                 own thread-local destructors have run)
 *   producer syscalls N           warm up, then N events between two getppid() marks
 *   producer devinfo              describes two devices, then one alloc on each
 *   producer hold SECONDS N       N allocs, then sleeps (to be killed)
 *   producer dup                  allocs id 1 twice (program-cache re-report), frees once
 *   producer mixed THREADS N      each thread: N DRAM allocs of 1000+k bytes, frees 9 in 10
 *   producer script               commands from stdin, "ok" after each:
 *                                   alloc DEV SIZE ID / free DEV ID (DRAM buffers)
 *                                   ident DEV REMOTE PCIE VIA ASIC_HEX [PCI_ADDRESS]
 *                                   quit
 * Prints "dropped D" and "enabled E" at the end. With PRODUCER_LINGER_MS set, sleeps
 * that long before exiting (so its figures can be read while it is alive).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "tttrack.h"

static long N;

static void *pairs_thread(void *arg) {
    uint64_t t = (uint64_t)(uintptr_t)arg;
    for (long k = 0; k < N; k++) {
        uint64_t id = (t << 32) | (uint64_t)k;
        tttrack_alloc(0, 4096 + (uint64_t)(k & 7), TTTRACK_BUFFER_DRAM, id);
        tttrack_free(0, id);
    }
    return NULL;
}

static void *mixed_thread(void *arg) {
    uint64_t t = (uint64_t)(uintptr_t)arg;
    for (long k = 0; k < N; k++) {
        uint64_t id = (t << 32) | (uint64_t)k;
        tttrack_alloc(0, 1000 + (uint64_t)k, TTTRACK_BUFFER_DRAM, id);
        if (k % 10 != 0) tttrack_free(0, id);
    }
    return NULL;
}

static void *keep_thread(void *arg) {
    uint64_t t = (uint64_t)(uintptr_t)arg;
    for (long k = 0; k < N; k++)
        tttrack_alloc((int32_t)(t % 2), 1000 + (uint64_t)k, TTTRACK_BUFFER_L1, (t << 32) | (uint64_t)k);
    return NULL;
}

/* handoff: A allocs X, hands it to B, B frees X, A allocs X again. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int turn; /* 0: A's turn, 1: B's turn */
static long rounds;
static void *handoff_b(void *arg) {
    (void)arg;
    for (long r = 0; r < rounds; r++) {
        pthread_mutex_lock(&mu);
        while (turn != 1) pthread_cond_wait(&cv, &mu);
        tttrack_free(0, 0x1000);
        turn = 0;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

/* late: an event from a pthread key destructor, which glibc runs after the thread's
 * thread_local destructors (the library's lane has been given back by then). */
static pthread_key_t late_key;
static void late_alloc(void *arg) {
    uint64_t t = (uint64_t)(uintptr_t)arg - 1;
    tttrack_alloc(0, 64, TTTRACK_BUFFER_L1, (t << 32) | (uint64_t)N);
}
static void *late_thread(void *arg) {
    uint64_t t = (uint64_t)(uintptr_t)arg;
    pthread_setspecific(late_key, (void *)(uintptr_t)(t + 1));
    for (long k = 0; k < N; k++) tttrack_alloc(0, 64, TTTRACK_BUFFER_L1, (t << 32) | (uint64_t)k);
    return NULL;
}

static void run_threads(int threads, void *(*fn)(void *)) {
    pthread_t th[256];
    if (threads > 256) threads = 256;
    for (int t = 0; t < threads; t++) pthread_create(&th[t], NULL, fn, (void *)(uintptr_t)t);
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: producer MODE ARGS\n"); return 2; }
    const char *mode = argv[1];
    if (!strcmp(mode, "pairs") || !strcmp(mode, "keep") || !strcmp(mode, "mixed")) {
        int threads = atoi(argv[2]);
        N = atol(argv[3]);
        run_threads(threads, !strcmp(mode, "pairs") ? pairs_thread
                             : !strcmp(mode, "keep") ? keep_thread : mixed_thread);
    } else if (!strcmp(mode, "dup")) {
        tttrack_alloc(0, 4096, TTTRACK_BUFFER_DRAM, 1);
        tttrack_alloc(0, 4096, TTTRACK_BUFFER_DRAM, 1);
        tttrack_free(0, 1);
        tttrack_free(0, 99); /* never allocated */
    } else if (!strcmp(mode, "handoff")) {
        rounds = atol(argv[2]);
        pthread_t b;
        pthread_create(&b, NULL, handoff_b, NULL);
        for (long r = 0; r < rounds; r++) {
            pthread_mutex_lock(&mu);
            while (turn != 0) pthread_cond_wait(&cv, &mu);
            tttrack_alloc(0, 2048, TTTRACK_BUFFER_L1, 0x1000);
            turn = 1;
            pthread_cond_signal(&cv);
            pthread_mutex_unlock(&mu);
        }
        pthread_mutex_lock(&mu);
        while (turn != 0) pthread_cond_wait(&cv, &mu);
        tttrack_alloc(0, 2048, TTTRACK_BUFFER_L1, 0x1000); /* the last one stays live */
        pthread_mutex_unlock(&mu);
        pthread_join(b, NULL);
    } else if (!strcmp(mode, "fork")) {
        N = atol(argv[2]);
        for (long k = 0; k < N; k++) tttrack_alloc(0, 100, TTTRACK_BUFFER_DRAM, 0xA0000000u + (uint64_t)k);
        fflush(stdout);
        pid_t c = fork();
        if (c == 0) {
            for (long k = 0; k < N; k++) tttrack_alloc(1, 200, TTTRACK_BUFFER_DRAM, 0xC0000000u + (uint64_t)k);
            printf("child %d\n", (int)getpid());
            fflush(stdout);
            /* Let the parent's reader see EOF while this child lives on. */
            fclose(stdout);
            close(2);
            const char *cs = getenv("PRODUCER_CHILD_SLEEP_S");
            sleep(cs ? (unsigned)atoi(cs) : 2);
            _exit(0);
        }
        printf("parent %d\n", (int)getpid());
        int st;
        if (argc > 3) waitpid(c, &st, 0); /* "fork N wait": outlive the child */
    } else if (!strcmp(mode, "burst")) {
        N = atol(argv[2]);
        for (long k = 0; k < N; k++) tttrack_alloc(0, 64, TTTRACK_BUFFER_L1, (uint64_t)k);
    } else if (!strcmp(mode, "churn")) {
        int threads = atoi(argv[2]);
        N = atol(argv[3]);
        for (int t = 0; t < threads; t++) {
            pthread_t th;
            pthread_create(&th, NULL, keep_thread, (void *)(uintptr_t)t);
            pthread_join(th, NULL);
        }
    } else if (!strcmp(mode, "late")) {
        int threads = atoi(argv[2]);
        N = atol(argv[3]);
        pthread_key_create(&late_key, late_alloc);
        for (int t = 0; t < threads; t++) {
            pthread_t th;
            pthread_create(&th, NULL, late_thread, (void *)(uintptr_t)t);
            pthread_join(th, NULL);
        }
    } else if (!strcmp(mode, "syscalls")) {
        N = atol(argv[2]);
        tttrack_alloc(0, 1, TTTRACK_BUFFER_DRAM, 1); /* set-up: segment and lane */
        tttrack_free(0, 1);
        getppid(); /* window start */
        for (long k = 0; k < N / 2; k++) {
            tttrack_alloc(0, 4096, TTTRACK_BUFFER_DRAM, 0x100 + (uint64_t)k);
            tttrack_free(0, 0x100 + (uint64_t)k);
        }
        getppid(); /* window end */
    } else if (!strcmp(mode, "devinfo")) {
        tttrack_device_info_t d = {0};
        d.arch = TTTRACK_ARCH_WORMHOLE_B0;
        d.num_tensix_cores = 64;
        d.num_dram_channels = 12;
        d.l1_size_per_core = 1499136;
        d.dram_size_per_channel = 1ull << 30;
        d.total_dram_bytes = 12ull << 30;
        d.total_l1_bytes = 64ull * 1499136;
        d.l1_small_size = 32768;
        d.trace_region_size = 1ull << 20;
        tttrack_device_info(0, &d);
        d.is_remote = 1;
        tttrack_device_info(1, &d);
        tttrack_alloc(0, 111, TTTRACK_BUFFER_DRAM, 1);
        tttrack_alloc(1, 222, TTTRACK_BUFFER_DRAM, 2);
    } else if (!strcmp(mode, "paced")) {
        /* paced RATE SECONDS: alloc/free pairs at RATE events a second, in bursts of
         * 1000 events, for SECONDS; prints how many it sent. */
        long rate = atol(argv[2]);
        double secs = atof(argv[3]);
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long sent = 0;
        printf("ready\n");
        fflush(stdout);
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            double el = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
            if (el >= secs) break;
            if ((double)sent < el * (double)rate) {
                for (int k = 0; k < 500; k++) {
                    tttrack_alloc(0, 4096, TTTRACK_BUFFER_DRAM, 0x100000 + (uint64_t)k);
                    tttrack_free(0, 0x100000 + (uint64_t)k);
                }
                sent += 1000;
            } else {
                usleep(500);
            }
        }
        printf("sent %ld\n", sent);
    } else if (!strcmp(mode, "hold")) {
        int secs = atoi(argv[2]);
        N = atol(argv[3]);
        for (long k = 0; k < N; k++) tttrack_alloc(0, 1 << 20, TTTRACK_BUFFER_DRAM, 0x10000 + (uint64_t)k * 0x100000);
        printf("ready\n");
        fflush(stdout);
        sleep((unsigned)secs);
    } else if (!strcmp(mode, "script")) {
        char line[256];
        while (fgets(line, sizeof line, stdin)) {
            char cmd[16] = "", addr[32] = "";
            long dev = 0, remote = 0, pcie = -1, via = 0;
            unsigned long long size = 0, id = 0;
            if (sscanf(line, "%15s", cmd) != 1) continue;
            if (!strcmp(cmd, "alloc") && sscanf(line, "%*s %ld %llu %llu", &dev, &size, &id) == 3) {
                tttrack_alloc((int32_t)dev, size, TTTRACK_BUFFER_DRAM, id);
            } else if (!strcmp(cmd, "free") && sscanf(line, "%*s %ld %llu", &dev, &id) == 2) {
                tttrack_free((int32_t)dev, id);
            } else if (!strcmp(cmd, "ident") &&
                       sscanf(line, "%*s %ld %ld %ld %ld %llx %31s", &dev, &remote, &pcie, &via, &id, addr) >= 5) {
                tttrack_chip_identity_t c;
                memset(&c, 0, sizeof c);
                c.struct_size = sizeof c;
                c.is_remote = (uint32_t)remote;
                c.pcie_index = (int32_t)pcie;
                c.via_pcie_index = (int32_t)via;
                c.asic_id = id;
                memcpy(c.pci_address, addr, strnlen(addr, sizeof c.pci_address - 1));
                tttrack_device_identity((int32_t)dev, &c);
            } else if (!strcmp(cmd, "quit")) {
                break;
            } else {
                printf("bad %s", line);
                fflush(stdout);
                continue;
            }
            printf("ok\n");
            fflush(stdout);
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("dropped %llu\nenabled %d\n", (unsigned long long)tttrack_dropped_events(), tttrack_enabled());
    fflush(stdout);
    const char *linger = getenv("PRODUCER_LINGER_MS");
    if (linger) usleep((useconds_t)atol(linger) * 1000);
    return 0;
}
