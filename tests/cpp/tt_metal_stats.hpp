// tt_metal_stats.hpp: the members of TT-Metal's own shared-memory tracking
// (tt::tt_metal::SharedMemoryStatsProvider of the shipping libtt_metal.so) that tests
// and benchmarks call, declared from the library's exported symbols (the library ships
// no headers; tests/metal.rs checks each is exported):
//   _ZN2tt8tt_metal25SharedMemoryStatsProviderC1Emibb      (uint64 asic_id, int device_id, bool disabled, bool verbose)
//   _ZN2tt8tt_metal25SharedMemoryStatsProviderD1Ev
//   _ZN2tt8tt_metal25SharedMemoryStatsProvider17record_allocationEimNS0_13ShmBufferTypeEj
//   _ZN2tt8tt_metal25SharedMemoryStatsProvider19record_deallocationEimNS0_13ShmBufferTypeEj
// The object's size is not exported; the storage below is larger than it can be.
#pragma once

namespace tt {
namespace tt_metal {
enum class ShmBufferType : int { DRAM = 0, L1 = 1, L1_SMALL = 3, TRACE = 4 };
class SharedMemoryStatsProvider {
   public:
    SharedMemoryStatsProvider(unsigned long asic_id, int device_id, bool tracking_disabled, bool verbose);
    ~SharedMemoryStatsProvider();
    void record_allocation(int pid, unsigned long size, ShmBufferType type, unsigned int chip_id);
    void record_deallocation(int pid, unsigned long size, ShmBufferType type, unsigned int chip_id);

   private:
    alignas(64) unsigned char storage_[16384];
};
}  // namespace tt_metal
}  // namespace tt
