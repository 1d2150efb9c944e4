/*
 * tttrack_shm.h: the shared-memory layout of a tttrack segment, for C readers.
 *
 * The Rust definitions in src/shm_layout.rs are the source of truth; tests/c_abi.rs
 * compiles this header and checks every size and offset against them. Every field is
 * accessed atomically by both sides; positions are 64-bit counters that only grow.
 */
#ifndef TTTRACK_SHM_H
#define TTTRACK_SHM_H

#include <stdint.h>
#include "tttrack.h"

#define TTTRACK_SEGMENT_MAGIC 0x3147455352545454ull /* "TTTRSEG1" little-endian */
#define TTTRACK_SEGMENT_LAYOUT_VERSION 3
#define TTTRACK_NUM_LANES 64
#define TTTRACK_LANE_CAPACITY 32768
#define TTTRACK_MAX_DEVICES 64
#define TTTRACK_DEVICE_SLOTS_OFFSET 512
#define TTTRACK_LANES_OFFSET 12288
#define TTTRACK_LANE_STRIDE (128 + TTTRACK_LANE_CAPACITY * 32)
#define TTTRACK_CHIP_IDENTITY_V1_SIZE 48
#define TTTRACK_BUFFER_DETAIL_V1_SIZE 32
#define TTTRACK_BANK_GEOMETRY_V1_SIZE 32
/* tttrack_segment_header_t.visible_devices_state */
#define TTTRACK_VISIBLE_UNSET 0     /* TT_VISIBLE_DEVICES not set: every card visible */
#define TTTRACK_VISIBLE_SET 1       /* set; the value is in visible_devices */
#define TTTRACK_VISIBLE_TOO_LONG 2  /* set to more than visible_devices holds */
#define TTTRACK_VISIBLE_DEVICES_BYTES 120

typedef struct tttrack_event {
    uint64_t seq;      /* per-process sequence number */
    uint8_t kind;      /* 1 alloc, 2 free, 3 cb alloc, 4 cb free, 5 kernel load, 6 kernel unload, 7 device info, 8 device identity;
                          extensions (version 1): 9 buffer shape, 10 buffer place, 11 bank geometry, 12 CB place,
                          13 CBs released, 14 mesh member */
    uint8_t subtype;   /* buffer type or kernel type */
    uint16_t reserved;
    int32_t device;
    uint64_t size;
    uint64_t id;
} tttrack_event_t;

/* A lane slot as the reader takes it: the tttrack_event_t of that position, as four
   64-bit words. */
typedef struct tttrack_slot { uint64_t words[4]; } tttrack_slot_t;

typedef struct tttrack_device_info_slot {
    uint32_t seq;      /* sequence lock: 0 never written, odd while written */
    uint32_t pad;
    uint64_t words[8]; /* a tttrack_device_info_t */
    uint64_t identity[6]; /* a tttrack_chip_identity_t */
    uint64_t pad2;
} tttrack_device_info_slot_t;

typedef struct tttrack_segment_header {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t segment_size;
    uint32_t pid;
    uint32_t uid;
    uint64_t start_time;        /* clock ticks since boot, /proc/PID/stat field 22 */
    uint32_t num_lanes;
    uint32_t lane_capacity;
    uint64_t lanes_offset;
    uint64_t lane_stride;
    char comm[16];
    uint64_t created_unix_ns;
    uint64_t lanes_claimed;     /* bit i: lane i owned by a thread */
    uint64_t lanes_reserved;    /* bit i: lane i's pages allocated; never touch a lane without it */
    uint64_t pad1[3];
    uint64_t seq;               /* next sequence number (own cache line) */
    uint64_t pad2[7];
    uint64_t no_lane_dropped;
    uint64_t pad3[7];
    uint32_t consumer_pid;      /* written by the aggregator */
    uint32_t pad4;
    uint64_t consumer_heartbeat_ns;
    uint64_t pad5[6];
    uint32_t visible_devices_state; /* TTTRACK_VISIBLE_*, written once with the identity */
    uint32_t visible_devices_len;
    char visible_devices[TTTRACK_VISIBLE_DEVICES_BYTES]; /* TT_VISIBLE_DEVICES, NUL-padded */
} tttrack_segment_header_t;

typedef struct tttrack_lane_header {
    uint64_t head;              /* producer line */
    uint64_t dropped;
    uint32_t state;             /* 0 free, 1 claimed */
    uint32_t owner_tid;
    uint64_t claims;
    uint64_t pad1[4];
    uint64_t tail;              /* consumer line */
    uint64_t pad2[7];
} tttrack_lane_header_t;

#define TTTRACK_COUNTERS_MAGIC 0x31544e4352545454ull /* "TTTRCNT1" little-endian */

/* The first 64 bytes of the counters page ("counters" in the tracking directory). */
typedef struct tttrack_page_presence {
    uint64_t magic;
    uint32_t version;
    uint32_t aggregator_pid;
    uint64_t heartbeat_ns;      /* CLOCK_MONOTONIC, refreshed at least every 100 ms */
    uint64_t started_unix_ns;
    uint64_t page_size;
    uint64_t pad[3];
} tttrack_page_presence_t;

/* ---- The counters page (src/counters_page.rs). All fields are read with atomic
 * 64-bit loads; the main block and the history are each under a sequence lock
 * (odd while written): copy, then check the sequence did not move. ---- */
#define TTTRACK_COUNTERS_LAYOUT_VERSION 5
/* tttrack_process_device_t.placement: how the device was placed on its chip */
#define TTTRACK_PLACED_AS_REPORTED 0 /* a host with no cards: the id as reported */
#define TTTRACK_PLACED_INFERRED 1    /* from TT_VISIBLE_DEVICES and the host's cards */
#define TTTRACK_PLACED_REPORTED 2    /* the process said which chip it is */
#define TTTRACK_PLACED_UNPLACED 3    /* not placeable: a chip of that process alone */
#define TTTRACK_PLACED_HOLDER 4      /* reports nothing; in the card's driver list (device -1) */
#define TTTRACK_PLACED_REGION 5      /* TT-Metal's region names the chip (device -1) */
/* Process record flags beyond exact/alive/untracked/device overflow (1, 2, 4, 8). */
#define TTTRACK_PROC_SOURCE_SOCKET 16  /* reports through the compatibility socket */
#define TTTRACK_PROC_SOURCE_METAL 32   /* known from TT-Metal's own region: counters only */
#define TTTRACK_PROC_LEFT_BEHIND 64    /* a region slot whose process is gone */
#define TTTRACK_PROC_ALSO_IN_REGION 128 /* lanes and a region slot: counted once, from lanes */
#define TTTRACK_PAGE_DEVICES 64
#define TTTRACK_PAGE_PROCESSES 1024
#define TTTRACK_PROCESS_DEVICES 32
#define TTTRACK_HISTORY_LEN 960
#define TTTRACK_NUM_CATS 10 /* dram l1 system_memory l1_small trace cb kernel kernel_app kernel_fabric kernel_dispatch */
#define TTTRACK_HIST_FIELDS 6 /* dram l1 l1_small trace cb kernel */

typedef struct tttrack_figure { uint64_t used, peak, count; } tttrack_figure_t;

typedef struct tttrack_aggregator_status {
    uint32_t pid, num_devices;
    uint64_t start_unix_ns, heartbeat_unix_ns, events_applied, events_lost;
    uint64_t unknown_frees, invalid_events, segments_attached, segments_rejected;
    uint32_t processes_tracked, process_overflow, num_processes, pad;
    uint64_t recovered_from_journal;  /* 1: started from an earlier run's journal */
    uint64_t exits_holding_memory;  /* processes that ended holding device memory */
    uint64_t leaked_bytes;          /* what they held */
    uint64_t reserved[2];
} tttrack_aggregator_status_t;

typedef struct tttrack_telemetry {
    uint64_t valid, sampled_unix_ns;
    int64_t asic_temp_mc, temp_max_mc;
    uint64_t vcore_mv, vcore_max_mv, current_ma, current_max_ma, power_uw, power_max_uw;
    uint64_t fan_rpm, aiclk_mhz, axiclk_mhz, arcclk_mhz, heartbeat, therm_trip_count;
    uint64_t heartbeat_stalled_samples, pcie_link_speed_milli_gts, pcie_link_width;
    /* firmware versions, 16 bits a component, A<<48|B<<32|C<<16|D (D = 0xFFFF when the
       version has three components); 0: not reported */
    uint64_t arc_fw_ver, eth_fw_ver, m3bl_fw_ver, m3app_fw_ver, ttflash_ver;
    uint64_t pcie_max_link_speed_milli_gts, pcie_max_link_width;
    /* bytes over PCIe since sampling began, and per second over the last interval */
    uint64_t pcie_h2d_bytes, pcie_d2h_bytes, pcie_h2d_bytes_per_s, pcie_d2h_bytes_per_s;
} tttrack_telemetry_t;

typedef struct tttrack_device_record {
    uint32_t id, flags;
    char arch[16], board[16], serial[24], pci_bdf[16];
    uint64_t dram_total, l1_total;
    tttrack_device_info_t info;
    tttrack_figure_t figures[TTTRACK_NUM_CATS];
    tttrack_telemetry_t telemetry;
    char fw_bundle[24];
    uint64_t l1_resident_peak;  /* high-water mark of L1 buffers + L1_SMALL + CBs + kernels */
    uint64_t asic_id;           /* tt_asic_id, or as a process reported it; 0: unknown */
    uint32_t owner_pid;         /* a remote chip only one process could name: its pid */
    int32_t via;                /* a remote chip: the row it is reached through; -1 unknown */
    uint64_t reserved;
} tttrack_device_record_t;

typedef struct tttrack_process_device {
    int32_t device;             /* the process's own (logical) id */
    uint16_t chip;              /* the row (device record id) of the chip it is */
    uint8_t placement;          /* TTTRACK_PLACED_* */
    uint8_t pad;
    uint64_t used[TTTRACK_NUM_CATS];
    uint64_t peak[TTTRACK_NUM_CATS];
} tttrack_process_device_t;

typedef struct tttrack_process_record {
    uint32_t pid, flags, uid, num_devices;
    uint64_t start_time;
    char comm[16];
    uint64_t first_seen_unix_ns, events_applied, events_lost, buffers;
    /* TTTRACK_PROC_ALSO_IN_REGION: what TT-Metal's region says (DRAM, L1, L1_SMALL,
       TRACE, CB, kernel); TTTRACK_PROC_LEFT_BEHIND: that slot's bytes. */
    uint64_t region_used[TTTRACK_HIST_FIELDS];
    uint64_t region_chip; /* N of tt_device_<N>_memory (left-behind slots) */
    tttrack_process_device_t devices[TTTRACK_PROCESS_DEVICES];
} tttrack_process_record_t;

typedef struct tttrack_history_sample {
    uint64_t unix_secs;
    uint64_t used[TTTRACK_PAGE_DEVICES][TTTRACK_HIST_FIELDS];
    int32_t temp_mc[TTTRACK_PAGE_DEVICES];
    uint32_t power_mw[TTTRACK_PAGE_DEVICES];
} tttrack_history_sample_t;

typedef struct tttrack_page_header {
    tttrack_page_presence_t presence;
    uint64_t main_seq, history_seq, history_written;
    uint64_t pad[5];
} tttrack_page_header_t;

/* Offsets in the page: header, status, devices, processes, history. */
#define TTTRACK_STATUS_OFFSET (sizeof(tttrack_page_header_t))
#define TTTRACK_DEVICES_OFFSET (TTTRACK_STATUS_OFFSET + sizeof(tttrack_aggregator_status_t))
#define TTTRACK_PROCESSES_OFFSET (TTTRACK_DEVICES_OFFSET + TTTRACK_PAGE_DEVICES * sizeof(tttrack_device_record_t))
#define TTTRACK_HISTORY_OFFSET (TTTRACK_PROCESSES_OFFSET + TTTRACK_PAGE_PROCESSES * sizeof(tttrack_process_record_t))
#define TTTRACK_PAGE_SIZE (TTTRACK_HISTORY_OFFSET + TTTRACK_HISTORY_LEN * sizeof(tttrack_history_sample_t))

#endif /* TTTRACK_SHM_H */
