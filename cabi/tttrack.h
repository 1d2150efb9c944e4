/*
 * tttrack.h: the C ABI of libtttrack.so.
 *
 * A TT-Metal process reports its device memory events through these calls. Each
 * producing thread writes fixed-size records into its own lane of a per-process
 * shared-memory segment (in $TTTRACK_DIR, default /dev/shm/tttrack); tt-aggregator
 * drains them. The per-event path makes no system call, takes no lock and allocates
 * nothing. Every function is safe to call from any thread, returns at once when
 * tracking is off (TT_ALLOC_TRACKING_ENABLED is not "1" at the first call), and never
 * lets a failure of tracking stop the application.
 *
 * Link with -ltttrack, or load the library with LD_PRELOAD.
 */
#ifndef TTTRACK_H
#define TTTRACK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* TT-Metal BufferType values. */
enum {
    TTTRACK_BUFFER_DRAM = 0,
    TTTRACK_BUFFER_L1 = 1,
    TTTRACK_BUFFER_SYSTEM_MEMORY = 2,
    TTTRACK_BUFFER_L1_SMALL = 3,
    TTTRACK_BUFFER_TRACE = 4
};

/* Kernel types. */
enum {
    TTTRACK_KERNEL_APPLICATION = 0,
    TTTRACK_KERNEL_FABRIC = 1,
    TTTRACK_KERNEL_DISPATCH = 2
};

/* Architectures (same values as the original protocol's arch_type). */
enum {
    TTTRACK_ARCH_UNKNOWN = 0,
    TTTRACK_ARCH_GRAYSKULL = 1,
    TTTRACK_ARCH_WORMHOLE_B0 = 2,
    TTTRACK_ARCH_BLACKHOLE = 3,
    TTTRACK_ARCH_QUASAR = 4
};

/* What a TT-Metal process knows about one device. 64 bytes. */
typedef struct tttrack_device_info {
    uint32_t arch;                  /* TTTRACK_ARCH_* */
    uint32_t is_remote;             /* non-zero: reached over Ethernet, no PCIe function */
    uint32_t num_tensix_cores;
    uint32_t num_dram_channels;
    uint64_t l1_size_per_core;      /* bytes */
    uint64_t dram_size_per_channel; /* bytes */
    uint64_t total_dram_bytes;
    uint64_t total_l1_bytes;
    uint64_t l1_small_size;         /* bytes of the L1_SMALL region */
    uint64_t trace_region_size;     /* bytes of the TRACE region */
} tttrack_device_info_t;

/*
 * Which physical chip one of the process's devices is: what TT-Metal (UMD) knows of it.
 * Set struct_size to sizeof(tttrack_chip_identity_t); later versions only append
 * fields, so a caller built against this one keeps working. Unknown fields: -1 for the
 * indices, 0 for the ids, "" for the address. 48 bytes.
 */
typedef struct tttrack_chip_identity {
    uint32_t struct_size;
    uint32_t is_remote;             /* non-zero: reached over Ethernet, no PCIe function */
    int32_t pcie_index;             /* local chip: its /dev/tenstorrent/N */
    int32_t via_pcie_index;         /* remote chip: the local chip it is reached through */
    uint64_t board_id;              /* the board's id (the driver's tt_serial) */
    uint64_t asic_id;               /* the chip's unique id (the driver's tt_asic_id) */
    char pci_address[16];           /* local chip: "DDDD:BB:DD.F", NUL-padded */
} tttrack_chip_identity_t;

/* TT-Metal's TensorMemoryLayout values. */
enum {
    TTTRACK_LAYOUT_INTERLEAVED = 0,
    TTTRACK_LAYOUT_SINGLE_BANK = 1,
    TTTRACK_LAYOUT_HEIGHT_SHARDED = 2,
    TTTRACK_LAYOUT_WIDTH_SHARDED = 3,
    TTTRACK_LAYOUT_BLOCK_SHARDED = 4,
    TTTRACK_LAYOUT_ND_SHARDED = 5
};

/*
 * Where a buffer lies in its banks and how. Set struct_size to
 * sizeof(tttrack_buffer_detail_t); later versions only append fields. 32 bytes.
 */
typedef struct tttrack_buffer_detail {
    uint32_t struct_size;
    uint32_t address;               /* its address, the same in every bank it uses */
    uint64_t page_size;
    uint64_t size_per_bank;         /* bytes each bank holds of it */
    uint32_t layout;                /* TTTRACK_LAYOUT_* */
    uint32_t num_cores;             /* a sharded buffer's cores; 0 when interleaved */
} tttrack_buffer_detail_t;

/*
 * The allocator's banks of one buffer type on a device: what its address map is drawn
 * against. Set struct_size to sizeof(tttrack_bank_geometry_t). 32 bytes.
 */
typedef struct tttrack_bank_geometry {
    uint32_t struct_size;
    uint32_t num_banks;             /* at most 65535 */
    uint64_t bank_size;             /* allocatable bytes of one bank */
    uint64_t base_address;          /* a bank's lowest allocatable address (32 bits) */
    uint32_t page_alignment;        /* what each page is rounded up to in a bank */
    uint32_t block_alignment;       /* what each buffer's range in a bank is rounded up to */
} tttrack_bank_geometry_t;

/* 1 if tracking is on in this process, else 0. */
int tttrack_enabled(void);
/* A buffer of `size` bytes at address `buffer_id` was allocated on a device. */
void tttrack_alloc(int32_t device_id, uint64_t size, uint8_t buffer_type, uint64_t buffer_id);
/* The buffer at `buffer_id` was freed (its size is remembered by the aggregator). */
void tttrack_free(int32_t device_id, uint64_t buffer_id);
void tttrack_cb_alloc(int32_t device_id, uint64_t size, uint64_t cb_id);
void tttrack_cb_free(int32_t device_id, uint64_t size, uint64_t cb_id);
/* `size` is the binary size times the number of cores it is loaded on. */
void tttrack_kernel_load(int32_t device_id, uint64_t size, uint64_t kernel_id, uint8_t kernel_type);
void tttrack_kernel_unload(int32_t device_id, uint64_t size, uint64_t kernel_id);
/* Describes a device (0 <= device_id < 64); exact figures override the built-in table. */
void tttrack_device_info(int32_t device_id, const tttrack_device_info_t *info);
/*
 * Says which physical chip device `device_id` (0 <= device_id < 64, the process's own
 * logical id) is. Without it the aggregator infers it from TT_VISIBLE_DEVICES; a later
 * call moves the device's figures to the chip named, exactly.
 */
void tttrack_device_identity(int32_t device_id, const tttrack_chip_identity_t *identity);
/* After tttrack_alloc: where buffer `buffer_id` lies in its banks (NULL: ignored). */
void tttrack_buffer_detail(int32_t device_id, uint64_t buffer_id, const tttrack_buffer_detail_t *detail);
/*
 * After tttrack_alloc of one chip's part of a buffer of a mesh of several chips (the
 * same buffer reported on each chip): the mesh's id and how many chips it spans.
 */
void tttrack_buffer_mesh(int32_t device_id, uint64_t buffer_id, uint32_t mesh_id, uint32_t num_chips);
/* The banks of buffer type `buffer_type` on a device (NULL or fields out of range: ignored). */
void tttrack_bank_geometry(int32_t device_id, uint8_t buffer_type, const tttrack_bank_geometry_t *geometry);
/* Events this process could not deliver (full lanes with no aggregator, no lane, no segment). */
uint64_t tttrack_dropped_events(void);
/* Optional: give the calling thread's lane back now rather than at thread exit. */
void tttrack_thread_detach(void);

#ifdef __cplusplus
}
#endif

#endif /* TTTRACK_H */
