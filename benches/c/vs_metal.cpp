// vs_metal.cpp: what a buffer event costs a program through TT-Metal's own tracking
// (SharedMemoryStatsProvider::record_allocation / record_deallocation of the shipping
// libtt_metal.so, its members declared in tests/cpp/tt_metal_stats.hpp from its exported
// symbols) and through
// libtttrack.so, in the same program, the same alloc/free pairs of 4 KiB DRAM buffers.
//
//   vs_metal bursts ROUNDS ASIC      bursts of 1024 events 2 ms apart, the two taking
//                                    turns; prints "metal NS tttrack NS" (medians of
//                                    ns per event)
//   vs_metal flood EVENTS ASIC       EVENTS back to back through each, one after the
//                                    other, three times alternated; prints the medians
//   vs_metal threads T EVENTS ASIC WHICH   T threads each sending EVENTS through WHICH
//                                    (metal or tttrack); prints "ns NS" (wall time per
//                                    event)
// Every mode ends with "dropped D" (events libtttrack.so could not deliver).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <thread>
#include <unistd.h>
#include <vector>

#include "tttrack.h"

#include "tt_metal_stats.hpp"

using tt::tt_metal::SharedMemoryStatsProvider;
using tt::tt_metal::ShmBufferType;

static SharedMemoryStatsProvider* provider;
static int self_pid;

static double now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

// Event i: alloc and free alternate; TT-Metal's free repeats the size (it keeps no
// buffer), ours names the buffer.
static inline void metal(uint64_t i) {
    if ((i & 1) == 0)
        provider->record_allocation(self_pid, 4096, ShmBufferType::DRAM, 0);
    else
        provider->record_deallocation(self_pid, 4096, ShmBufferType::DRAM, 0);
}

static inline void ours(uint64_t i) {
    if ((i & 1) == 0)
        tttrack_alloc(0, 4096, TTTRACK_BUFFER_DRAM, 0x1000 + (i >> 1));
    else
        tttrack_free(0, 0x1000 + (i >> 1));
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

template <class F>
static double run(F f, uint64_t& counter, long n) {
    double t0 = now_ns();
    for (long e = 0; e < n; e++) f(counter++);
    return (now_ns() - t0) / (double)n;
}

int main(int argc, char** argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: vs_metal bursts ROUNDS ASIC | flood EVENTS ASIC | threads T EVENTS ASIC WHICH\n");
        return 2;
    }
    self_pid = getpid();
    const char* mode = argv[1];
    bool threads = strcmp(mode, "threads") == 0;
    unsigned long asic = strtoul(argv[threads ? 4 : 3], nullptr, 10);
    provider = new SharedMemoryStatsProvider(asic, 0, false, false);
    uint64_t i = 0, j = 0;
    if (strcmp(mode, "bursts") == 0) {
        long rounds = atol(argv[2]);
        std::vector<double> m, o;
        for (long r = -64; r < rounds; r++) {
            usleep(2000);
            double a = run(metal, i, 1024);
            usleep(2000);
            double b = run(ours, j, 1024);
            if (r >= 0) {
                m.push_back(a);
                o.push_back(b);
            }
        }
        printf("metal %.2f tttrack %.2f\n", median(m), median(o));
    } else if (strcmp(mode, "flood") == 0) {
        long n = atol(argv[2]);
        std::vector<double> m, o;
        for (int r = 0; r < 3; r++) {
            m.push_back(run(metal, i, n));
            o.push_back(run(ours, j, n));
        }
        printf("metal %.2f tttrack %.2f\n", median(m), median(o));
    } else if (threads) {
        int t = atoi(argv[2]);
        long n = atol(argv[3]);
        bool use_metal = strcmp(argv[5], "metal") == 0;
        std::atomic<int> go{0};
        std::vector<std::thread> th;
        for (int k = 0; k < t; k++)
            th.emplace_back([&, k] {
                uint64_t c = (uint64_t)k << 40;
                while (!go.load()) {
                }
                for (long e = 0; e < n; e++) {
                    if (use_metal)
                        metal(c++);
                    else
                        ours(c++);
                }
            });
        double t0 = now_ns();
        go.store(1);
        for (auto& x : th) x.join();
        printf("ns %.2f\n", (now_ns() - t0) / ((double)n * t));
    }
    printf("dropped %llu\n", (unsigned long long)tttrack_dropped_events());
    delete provider;
    return 0;
}
