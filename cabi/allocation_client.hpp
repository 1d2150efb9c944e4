// allocation_client.hpp: the AllocationClient API of instrumented TT-Metal builds,
// header-only, on top of libtttrack.so's C ABI. For builds that can link libtttrack.so
// directly (-ltttrack) instead of preloading it.
#pragma once

#include <cstdint>

#include "tttrack.h"

namespace tt::tt_metal::tttrack {

class AllocationClient {
public:
    static void report_allocation(int device_id, uint64_t size, uint8_t buffer_type, uint64_t buffer_id) {
        tttrack_alloc(device_id, size, buffer_type, buffer_id);
    }
    static void report_deallocation(int device_id, uint64_t buffer_id) { tttrack_free(device_id, buffer_id); }
    static void report_cb_allocation(int device_id, uint64_t size, uint64_t cb_id) {
        tttrack_cb_alloc(device_id, size, cb_id);
    }
    static void report_cb_deallocation(int device_id, uint64_t size, uint64_t cb_id) {
        tttrack_cb_free(device_id, size, cb_id);
    }
    static void report_kernel_load(int device_id, uint64_t size, uint64_t kernel_id, uint8_t kernel_type) {
        tttrack_kernel_load(device_id, size, kernel_id, kernel_type);
    }
    static void report_kernel_unload(int device_id, uint64_t size, uint64_t kernel_id) {
        tttrack_kernel_unload(device_id, size, kernel_id);
    }
    static void report_device_info(int device_id, const tttrack_device_info_t& info) {
        tttrack_device_info(device_id, &info);
    }
    // Which physical chip device_id is (struct_size is set here): call it where
    // TT-Metal opens a device, with what UMD knows of the chip.
    static void report_device_identity(int device_id, tttrack_chip_identity_t identity) {
        identity.struct_size = sizeof identity;
        tttrack_device_identity(device_id, &identity);
    }
    static bool is_enabled() { return tttrack_enabled() != 0; }
    static uint64_t dropped_events() { return tttrack_dropped_events(); }
};

}  // namespace tt::tt_metal::tttrack
