// metal_stats.cpp: drives the shipping TT-Metal library's own shared-memory tracking
// (tt::tt_metal::SharedMemoryStatsProvider in libtt_metal.so from the ttnn wheel), so
// that tests read regions written by TT-Metal's code, not by ours.
//
// The library ships no headers: the members called are declared in tt_metal_stats.hpp
// from their exported symbols (checked with `nm -D` by the test that builds this).
//
// Commands, one per line on stdin, each answered "ok" on stdout:
//   open ASIC_ID DEVICE_ID      a provider for that chip (its region tt_device_<ASIC_ID>_memory)
//   alloc INDEX SIZE TYPE       record an allocation on the INDEX-th provider (TYPE: 0 DRAM,
//                               1 L1, 3 L1_SMALL, 4 TRACE)
//   free INDEX SIZE TYPE        record a deallocation
//   close INDEX                 destroy the provider (TT-Metal's clean exit for that chip)
//   sleep MS                    wait MS milliseconds
//   exit                        destroy every provider, exit 0
//   abort                       _exit(0) with every provider alive (a crash, as far as
//                               the region can tell)
// Built with -DWITH_LANES (and linked with libtttrack.so), also:
//   lanes DEV SIZE ADDR         tttrack_alloc(DEV, SIZE, DRAM, ADDR): the same process
//                               reporting through tttrack's lanes too
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <unistd.h>
#ifdef WITH_LANES
#include "tttrack.h"
#endif

#include "tt_metal_stats.hpp"

using tt::tt_metal::SharedMemoryStatsProvider;
using tt::tt_metal::ShmBufferType;

int main() {
    SharedMemoryStatsProvider* providers[64] = {};
    unsigned device_ids[64] = {};
    int n = 0;
    char line[256];
    setvbuf(stdout, nullptr, _IONBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        unsigned long a = 0, b = 0;
        int i = 0, t = 0;
        if (sscanf(line, "open %lu %lu", &a, &b) == 2 && n < 64) {
            providers[n] = new SharedMemoryStatsProvider(a, (int)b, false, false);
            device_ids[n] = (unsigned)b;
            n++;
        } else if (sscanf(line, "alloc %d %lu %d", &i, &a, &t) == 3 && i >= 0 && i < n && providers[i]) {
            providers[i]->record_allocation(getpid(), a, (ShmBufferType)t, device_ids[i]);
        } else if (sscanf(line, "free %d %lu %d", &i, &a, &t) == 3 && i >= 0 && i < n && providers[i]) {
            providers[i]->record_deallocation(getpid(), a, (ShmBufferType)t, device_ids[i]);
        } else if (sscanf(line, "sleep %lu", &a) == 1) {
            usleep((useconds_t)(a * 1000));
        } else if (sscanf(line, "close %d", &i) == 1 && i >= 0 && i < n && providers[i]) {
            delete providers[i];
            providers[i] = nullptr;
#ifdef WITH_LANES
        } else if (sscanf(line, "lanes %d %lu %lu", &i, &a, &b) == 3) {
            tttrack_alloc(i, a, TTTRACK_BUFFER_DRAM, b);
#endif
        } else if (strncmp(line, "exit", 4) == 0) {
            for (int k = 0; k < n; k++) delete providers[k];
            printf("ok\n");
            return 0;
        } else if (strncmp(line, "abort", 5) == 0) {
            _exit(0);
        } else {
            printf("bad command: %s", line);
            continue;
        }
        printf("ok\n");
    }
    return 0;
}
