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
#define TTTRACK_SEGMENT_LAYOUT_VERSION 1
#define TTTRACK_NUM_LANES 64
#define TTTRACK_LANE_CAPACITY 32768
#define TTTRACK_MAX_DEVICES 64
#define TTTRACK_DEVICE_SLOTS_OFFSET 512
#define TTTRACK_LANES_OFFSET 12288
#define TTTRACK_LANE_STRIDE (128 + TTTRACK_LANE_CAPACITY * 32)

typedef struct tttrack_event {
    uint64_t seq;      /* per-process sequence number */
    uint8_t kind;      /* 1 alloc, 2 free, 3 cb alloc, 4 cb free, 5 kernel load, 6 kernel unload, 7 device info */
    uint8_t subtype;   /* buffer type or kernel type */
    uint16_t reserved;
    int32_t device;
    uint64_t size;
    uint64_t id;
} tttrack_event_t;

typedef struct tttrack_device_info_slot {
    uint32_t seq;      /* sequence lock: 0 never written, odd while written */
    uint32_t pad;
    uint64_t words[8]; /* a tttrack_device_info_t */
    uint64_t pad2[7];
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
    uint64_t pad1[5];
    uint64_t seq;               /* next sequence number (own cache line) */
    uint64_t pad2[7];
    uint64_t no_lane_dropped;
    uint64_t pad3[7];
    uint32_t consumer_pid;      /* written by the aggregator */
    uint32_t pad4;
    uint64_t consumer_heartbeat_ns;
    uint64_t pad5[6];
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

#endif /* TTTRACK_SHM_H */
