// header_client.cpp: uses cabi/allocation_client.hpp, linked to libtttrack.so.
#include <cstdio>
#include <unistd.h>
#include "allocation_client.hpp"
using tt::tt_metal::tttrack::AllocationClient;
int main() {
    if (!AllocationClient::is_enabled()) { printf("disabled\n"); return 3; }
    AllocationClient::report_allocation(0, 5000, 0, 0xAA);
    AllocationClient::report_allocation(0, 700, 1, 0xBB);
    AllocationClient::report_cb_allocation(0, 300, 0xCC);
    AllocationClient::report_kernel_load(0, 900, 0xDD, 1);
    AllocationClient::report_deallocation(0, 0xBB);
    printf("done %llu\n", (unsigned long long)AllocationClient::dropped_events());
    fflush(stdout);
    sleep(30);
    return 0;
}
