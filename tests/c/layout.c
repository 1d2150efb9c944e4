/* layout.c: prints every size and offset of cabi/tttrack_shm.h, one "name value" a line. */
#include <stddef.h>
#include <stdio.h>
#include "tttrack_shm.h"
#define S(name, t) printf("sizeof %s %zu\n", name, sizeof(t))
#define O(name, t, f) printf("%s.%s %zu\n", name, #f, offsetof(t, f))
int main(void) {
    S("Event", tttrack_event_t);
    S("DeviceInfo", tttrack_device_info_t);
    S("DeviceInfoSlot", tttrack_device_info_slot_t);
    S("ChipIdentity", tttrack_chip_identity_t);
    O("ChipIdentity", tttrack_chip_identity_t, struct_size); O("ChipIdentity", tttrack_chip_identity_t, is_remote);
    O("ChipIdentity", tttrack_chip_identity_t, pcie_index); O("ChipIdentity", tttrack_chip_identity_t, via_pcie_index);
    O("ChipIdentity", tttrack_chip_identity_t, board_id); O("ChipIdentity", tttrack_chip_identity_t, asic_id);
    O("ChipIdentity", tttrack_chip_identity_t, pci_address);
    O("DeviceInfoSlot", tttrack_device_info_slot_t, identity);
    S("BufferDetail", tttrack_buffer_detail_t);
    O("BufferDetail", tttrack_buffer_detail_t, struct_size); O("BufferDetail", tttrack_buffer_detail_t, address);
    O("BufferDetail", tttrack_buffer_detail_t, page_size); O("BufferDetail", tttrack_buffer_detail_t, size_per_bank);
    O("BufferDetail", tttrack_buffer_detail_t, layout); O("BufferDetail", tttrack_buffer_detail_t, num_cores);
    S("BankGeometry", tttrack_bank_geometry_t);
    O("BankGeometry", tttrack_bank_geometry_t, struct_size); O("BankGeometry", tttrack_bank_geometry_t, num_banks);
    O("BankGeometry", tttrack_bank_geometry_t, bank_size); O("BankGeometry", tttrack_bank_geometry_t, base_address);
    O("BankGeometry", tttrack_bank_geometry_t, page_alignment);
    O("BankGeometry", tttrack_bank_geometry_t, block_alignment);
    printf("const BUFFER_DETAIL_V1_SIZE %d\nconst BANK_GEOMETRY_V1_SIZE %d\n", TTTRACK_BUFFER_DETAIL_V1_SIZE,
           TTTRACK_BANK_GEOMETRY_V1_SIZE);
    O("SegmentHeader", tttrack_segment_header_t, visible_devices_state);
    O("SegmentHeader", tttrack_segment_header_t, visible_devices_len);
    O("SegmentHeader", tttrack_segment_header_t, visible_devices);
    printf("const CHIP_IDENTITY_V1_SIZE %d\nconst VISIBLE_UNSET %d\nconst VISIBLE_SET %d\n",
           TTTRACK_CHIP_IDENTITY_V1_SIZE, TTTRACK_VISIBLE_UNSET, TTTRACK_VISIBLE_SET);
    printf("const VISIBLE_TOO_LONG %d\nconst VISIBLE_DEVICES_BYTES %d\n",
           TTTRACK_VISIBLE_TOO_LONG, TTTRACK_VISIBLE_DEVICES_BYTES);
    S("SegmentHeader", tttrack_segment_header_t);
    S("LaneHeader", tttrack_lane_header_t);
    O("Event", tttrack_event_t, seq); O("Event", tttrack_event_t, kind);
    O("Event", tttrack_event_t, subtype); O("Event", tttrack_event_t, device);
    O("Event", tttrack_event_t, size); O("Event", tttrack_event_t, id);
    O("DeviceInfo", tttrack_device_info_t, arch); O("DeviceInfo", tttrack_device_info_t, is_remote);
    O("DeviceInfo", tttrack_device_info_t, num_tensix_cores);
    O("DeviceInfo", tttrack_device_info_t, num_dram_channels);
    O("DeviceInfo", tttrack_device_info_t, l1_size_per_core);
    O("DeviceInfo", tttrack_device_info_t, dram_size_per_channel);
    O("DeviceInfo", tttrack_device_info_t, total_dram_bytes);
    O("DeviceInfo", tttrack_device_info_t, total_l1_bytes);
    O("DeviceInfo", tttrack_device_info_t, l1_small_size);
    O("DeviceInfo", tttrack_device_info_t, trace_region_size);
    O("DeviceInfoSlot", tttrack_device_info_slot_t, seq);
    O("DeviceInfoSlot", tttrack_device_info_slot_t, words);
    O("SegmentHeader", tttrack_segment_header_t, magic); O("SegmentHeader", tttrack_segment_header_t, version);
    O("SegmentHeader", tttrack_segment_header_t, header_size); O("SegmentHeader", tttrack_segment_header_t, segment_size);
    O("SegmentHeader", tttrack_segment_header_t, pid); O("SegmentHeader", tttrack_segment_header_t, uid);
    O("SegmentHeader", tttrack_segment_header_t, start_time); O("SegmentHeader", tttrack_segment_header_t, num_lanes);
    O("SegmentHeader", tttrack_segment_header_t, lane_capacity); O("SegmentHeader", tttrack_segment_header_t, lanes_offset);
    O("SegmentHeader", tttrack_segment_header_t, lane_stride); O("SegmentHeader", tttrack_segment_header_t, comm);
    O("SegmentHeader", tttrack_segment_header_t, created_unix_ns); O("SegmentHeader", tttrack_segment_header_t, seq);
    O("SegmentHeader", tttrack_segment_header_t, lanes_claimed); O("SegmentHeader", tttrack_segment_header_t, lanes_reserved);
    O("SegmentHeader", tttrack_segment_header_t, no_lane_dropped);
    O("SegmentHeader", tttrack_segment_header_t, consumer_pid);
    O("SegmentHeader", tttrack_segment_header_t, consumer_heartbeat_ns);
    O("LaneHeader", tttrack_lane_header_t, head); O("LaneHeader", tttrack_lane_header_t, dropped);
    O("LaneHeader", tttrack_lane_header_t, state); O("LaneHeader", tttrack_lane_header_t, owner_tid);
    O("LaneHeader", tttrack_lane_header_t, claims); O("LaneHeader", tttrack_lane_header_t, tail);
    S("PagePresence", tttrack_page_presence_t);
    O("PagePresence", tttrack_page_presence_t, magic); O("PagePresence", tttrack_page_presence_t, version);
    O("PagePresence", tttrack_page_presence_t, aggregator_pid); O("PagePresence", tttrack_page_presence_t, heartbeat_ns);
    O("PagePresence", tttrack_page_presence_t, started_unix_ns); O("PagePresence", tttrack_page_presence_t, page_size);
    printf("const COUNTERS_MAGIC %llu\n", (unsigned long long)TTTRACK_COUNTERS_MAGIC);
    printf("const SEGMENT_MAGIC %llu\n", (unsigned long long)TTTRACK_SEGMENT_MAGIC);
    printf("const NUM_LANES %d\nconst LANE_CAPACITY %d\nconst LANES_OFFSET %d\nconst LANE_STRIDE %d\n",
           TTTRACK_NUM_LANES, TTTRACK_LANE_CAPACITY, TTTRACK_LANES_OFFSET, TTTRACK_LANE_STRIDE);
    printf("const MAX_DEVICES %d\nconst DEVICE_SLOTS_OFFSET %d\nconst SEGMENT_LAYOUT_VERSION %d\n",
           TTTRACK_MAX_DEVICES, TTTRACK_DEVICE_SLOTS_OFFSET, TTTRACK_SEGMENT_LAYOUT_VERSION);
    S("Figure", tttrack_figure_t);
    S("AggregatorStatus", tttrack_aggregator_status_t);
    S("Telemetry", tttrack_telemetry_t);
    S("DeviceRecord", tttrack_device_record_t);
    S("ProcessDevice", tttrack_process_device_t);
    S("ProcessRecord", tttrack_process_record_t);
    S("HistorySample", tttrack_history_sample_t);
    S("PageHeader", tttrack_page_header_t);
    O("DeviceRecord", tttrack_device_record_t, figures);
    O("DeviceRecord", tttrack_device_record_t, telemetry);
    O("ProcessRecord", tttrack_process_record_t, devices);
    O("ProcessRecord", tttrack_process_record_t, region_used);
    O("ProcessRecord", tttrack_process_record_t, region_chip);
    O("AggregatorStatus", tttrack_aggregator_status_t, events_applied);
    O("AggregatorStatus", tttrack_aggregator_status_t, processes_tracked);
    O("DeviceRecord", tttrack_device_record_t, info);
    O("DeviceRecord", tttrack_device_record_t, asic_id);
    O("DeviceRecord", tttrack_device_record_t, owner_pid);
    O("DeviceRecord", tttrack_device_record_t, via);
    O("ProcessDevice", tttrack_process_device_t, device);
    O("ProcessDevice", tttrack_process_device_t, chip);
    O("ProcessDevice", tttrack_process_device_t, placement);
    O("ProcessDevice", tttrack_process_device_t, used);
    printf("const COUNTERS_LAYOUT_VERSION %d\nconst PLACED_AS_REPORTED %d\nconst PLACED_INFERRED %d\n",
           TTTRACK_COUNTERS_LAYOUT_VERSION, TTTRACK_PLACED_AS_REPORTED, TTTRACK_PLACED_INFERRED);
    printf("const PLACED_REPORTED %d\nconst PLACED_UNPLACED %d\nconst PLACED_HOLDER %d\n",
           TTTRACK_PLACED_REPORTED, TTTRACK_PLACED_UNPLACED, TTTRACK_PLACED_HOLDER);
    printf("const PLACED_REGION %d\nconst PROC_SOURCE_SOCKET %d\nconst PROC_SOURCE_METAL %d\n",
           TTTRACK_PLACED_REGION, TTTRACK_PROC_SOURCE_SOCKET, TTTRACK_PROC_SOURCE_METAL);
    printf("const PROC_LEFT_BEHIND %d\nconst PROC_ALSO_IN_REGION %d\n",
           TTTRACK_PROC_LEFT_BEHIND, TTTRACK_PROC_ALSO_IN_REGION);
    O("PageHeader", tttrack_page_header_t, main_seq);
    O("PageHeader", tttrack_page_header_t, history_seq);
    O("PageHeader", tttrack_page_header_t, history_written);
    printf("const PAGE_SIZE %zu\nconst STATUS_OFFSET %zu\nconst DEVICES_OFFSET %zu\n",
           (size_t)TTTRACK_PAGE_SIZE, (size_t)TTTRACK_STATUS_OFFSET, (size_t)TTTRACK_DEVICES_OFFSET);
    printf("const PROCESSES_OFFSET %zu\nconst HISTORY_OFFSET %zu\n",
           (size_t)TTTRACK_PROCESSES_OFFSET, (size_t)TTTRACK_HISTORY_OFFSET);
    return 0;
}
