#!/usr/bin/env bash
# Makes ROOT a runtime root for the shipping TT-Metal in mock mode (a device with no
# card), what an unpacked ttnn wheel lacks: the wheel's tt_metal files (linked),
# cluster descriptions of one Wormhole n150 and of one Blackhole p150, written from UMD's
# format, whose chip id is CHIP (the N of its tt_device_<N>_memory region; their board
# ids are a known n150's and p150's), of a Wormhole n300 whose two chips are CHIP and
# CHIP2 (its second chip reached over Ethernet; CHIP2 defaults to CHIP + 1), and a
# stand-in for the RISC-V compiler that only says its version (TT-Metal then uses the
# wheel's pre-compiled firmware). Run programs with TT_METAL_RUNTIME_ROOT=ROOT and
# OMPI_MCA_btl=self, from a directory of their own (they write ./generated/).
#   scripts/metal-mock-root.sh ROOT CHIP [CHIP2]
set -euo pipefail
root=$1
chip=$2
chip2=${3:-$((chip + 1))}
cd "$(dirname "$0")/.."
lib=$(scripts/fetch-ttnn.sh)
wheel_metal=$(dirname "$(dirname "$lib")")/tt_metal
mkdir -p "$root/tt_metal"
for e in "$wheel_metal"/*; do
  ln -sfn "$e" "$root/tt_metal/$(basename "$e")"
done
examples=$root/tt_metal/third_party/umd/tests/cluster_descriptor_examples
mkdir -p "$examples"
cat > "$examples/wormhole_N150.yaml" <<YAML
arch:
  0: wormhole_b0
chips:
  0:
    - 0
    - 0
    - 0
    - 0
chip_unique_ids:
  0: $chip
ethernet_connections:
  []
chips_with_mmio:
  - 0: 0
harvesting:
  0:
    noc_translation: true
    harvest_mask: 64
    dram_harvesting_mask: 0
    eth_harvesting_mask: 0
    pcie_harvesting_mask: 0
chip_to_boardtype:
  0: n150
boards:
  -
    - board_id: 72059269368820857
    - board_type: n150
    - chips:
        - 0
YAML
cat > "$examples/blackhole_P150.yaml" <<YAML
arch:
  0: blackhole
chips:
  {}
chip_unique_ids:
  0: $chip
ethernet_connections:
  []
ethernet_connections_to_remote_devices:
  []
chips_with_mmio:
  - 0: 0
harvesting:
  0:
    noc_translation: true
    harvest_mask: 0
    dram_harvesting_mask: 0
    eth_harvesting_mask: 288
    pcie_harvesting_mask: 2
    l2cpu_harvesting_mask: 0
boards:
  -
    - board_id: 4476187513037
    - board_type: p150
    - chips:
        - 0
YAML
cat > "$examples/wormhole_N300.yaml" <<YAML
arch:
  0: wormhole_b0
  1: wormhole_b0
chips:
  0: [0, 0, 0, 0]
  1: [1, 0, 0, 0]
chip_unique_ids:
  0: $chip
  1: $chip2
ethernet_connections:
  - [{chip: 0, chan: 8}, {chip: 1, chan: 0}]
  - [{chip: 0, chan: 9}, {chip: 1, chan: 1}]
chips_with_mmio:
  - 0: 0
harvesting:
  0: {noc_translation: true, harvest_mask: 65}
  1: {noc_translation: true, harvest_mask: 5}
chip_to_boardtype:
  0: n300
  1: n300
boards:
  - [{board_id: 72058994491072686}, {board_type: n300}, {chips: [0, 1]}]
YAML
bin=$root/runtime/sfpi/compiler/bin
mkdir -p "$bin"
cat > "$bin/riscv-tt-elf-g++" <<'SH'
#!/bin/sh
if [ "$1" = "--version" ]; then
  echo "riscv-tt-elf-g++ (tenstorrent/sfpi:7.89.0[1050]) 15.1.0"
  exit 0
fi
echo "riscv-tt-elf-g++: a stand-in that compiles nothing" >&2
exit 1
SH
chmod 755 "$bin/riscv-tt-elf-g++"
