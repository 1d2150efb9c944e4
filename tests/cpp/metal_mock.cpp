// metal_mock.cpp: the shipping TT-Metal (libtt_metal.so of the ttnn wheel) in its own
// mock mode: a device with no card, its real allocator handing out real buffers, its
// own tracking writing its real region. The test bed for what tttrack reads of a stock
// TT-Metal process.
//
// The library ships no headers: the types and members used are declared below from
// its exported symbols (nm -D; the test that builds this checks each is exported).
// Enum values are TT-Metal's: tt::ARCH WORMHOLE_B0 = 2, BLACKHOLE = 3; BufferType DRAM 0,
// L1 1, SYSTEM_MEMORY 2, L1_SMALL 3, TRACE 4.
//
//   metal_mock ARCH        ARCH: wormhole or blackhole. Opens device 0 (mock, one chip;
//                          METAL_MOCK_L1_SMALL: an L1_SMALL reservation of that many bytes;
//                          METAL_MOCK_CHIPS=2: a mesh of the two chips of a Wormhole
//                          n300 instead, every buffer a mesh buffer),
//                          then reads commands on stdin, answering each on stdout:
//     alloc SIZE PAGE TYPE  a buffer -> "buf N ADDR SIZE_PER_BANK" (N: its index) or
//                           "oom WHAT" (TT-Metal's out-of-memory, its first lines)
//     free N                drops buffer N -> "ok"
//     thread SIZE PAGE TYPE as alloc, on a thread made for it (the buffer outlives it)
//     loop N SIZE PAGE TYPE N times a buffer made and dropped -> "ns NS" (per buffer
//                           event: an allocation or a free)
//     stats TYPE            the allocator's own view of TYPE on the device -> "stats BANKS
//                           BANK_SIZE ALIGNMENT ALLOCATABLE ALLOCATED FREE LARGEST L1_BASE
//                           DRAM_BASE" (per bank: Allocator::get_statistics; the bases:
//                           get_base_allocator_addr)
//     cb ADDR SIZE          a circular buffer of SIZE bytes on each of the 64 cores
//                           (0,0)-(7,7) at ADDR, told to the graph tracker as a program
//                           tells it (GraphTracker::track_allocate_cb) -> "ok"
//     cbfree                the device's circular buffers released (track_deallocate_cb)
//                           -> "ok"
//     sleep MS              -> "ok" after MS milliseconds
//     exit                  closes the device -> "ok"
//     abort                 _exit(0): every buffer still held, nothing closed
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>
#include <unistd.h>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace tt {
enum class ARCH : int { WORMHOLE_B0 = 2, BLACKHOLE = 3 };
struct xy_pair {
    size_t x, y;
};
}  // namespace tt
namespace ttsl {
template <typename T, typename Tag>
struct StrongType {
    T value;
};
}  // namespace ttsl
namespace tt {
namespace tt_metal {
enum class HalMemType : unsigned char { L1 = 0, DRAM = 1, HOST = 2 };
enum class BufferType : int { DRAM = 0, L1 = 1, SYSTEM_MEMORY = 2, L1_SMALL = 3, TRACE = 4 };
struct SubDeviceIdTag;
class IDevice;
class Buffer {
   public:
    uint32_t address() const;
    uint64_t aligned_size_per_bank() const;
};
// Allocator::get_statistics's answer in 0.81.1: four size_t, each per bank.
struct Statistics {
    size_t total_allocatable_size_bytes;
    size_t total_allocated_bytes;
    size_t total_free_bytes;
    size_t largest_free_block_bytes;
};
class Allocator {
   public:
    unsigned int get_num_banks(const BufferType& type) const;
    unsigned long get_bank_size(const BufferType& type) const;
    unsigned int get_alignment(BufferType type) const;
    Statistics get_statistics(const BufferType& type) const;
    unsigned long get_base_allocator_addr(const HalMemType& mem) const;
};
class CoreRange {
   public:
    CoreRange(const tt::xy_pair& start, const tt::xy_pair& end);
   private:
    tt::xy_pair start_, end_;
};
// Room enough for the library's CoreRangeSet (made in place, never destroyed).
class CoreRangeSet {
   public:
    explicit CoreRangeSet(const CoreRange& range);
   private:
    unsigned char room_[256];
};
class GraphTracker {
   public:
    static GraphTracker& instance();
    void track_allocate_cb(const CoreRangeSet& cores, unsigned long addr, unsigned long size, bool global,
                           const IDevice* device);
    void track_deallocate_cb(const IDevice* device);
};
class BufferShardingArgs {
   public:
    BufferShardingArgs();  // interleaved
   private:
    void* impl_;  // a std::unique_ptr of the library's (left to it; this program ends soon)
};
// 12 bytes: the dispatch core type and an optional axis; all zero is the default.
struct DispatchCoreConfig {
    uint32_t words[3] = {0, 0, 0};
};
namespace experimental {
void configure_mock_mode(tt::ARCH arch, unsigned int num_chips);
}
class BufferImpl {
   public:
    static std::shared_ptr<Buffer> create(IDevice* device, unsigned long size, unsigned long page_size,
                                          BufferType type, const BufferShardingArgs& sharding,
                                          std::optional<bool> bottom_up,
                                          std::optional<ttsl::StrongType<unsigned char, SubDeviceIdTag>> sub_device);
};
namespace distributed {
// Its fields (an optional MeshShape, an optional MeshCoordinate, a vector of chip ids)
// all empty: zero bytes, with room to spare.
struct MeshDeviceConfig {
    unsigned char zero[1024] = {};
};
class MeshDevice {
   public:
    static std::shared_ptr<MeshDevice> create_unit_mesh(int device_id, unsigned long l1_small_size,
                                                        unsigned long trace_region_size,
                                                        unsigned long num_command_queues,
                                                        const DispatchCoreConfig& dispatch,
                                                        std::span<const unsigned int> l1_bank_remap,
                                                        unsigned long worker_l1_size);
    bool close();
    const std::unique_ptr<Allocator>& allocator() const;
    // The system's mesh: a MeshDeviceConfig with no shape, offset or ids.
    static std::shared_ptr<MeshDevice> create(const struct MeshDeviceConfig& config, unsigned long l1_small_size,
                                              unsigned long trace_region_size, unsigned long num_command_queues,
                                              const DispatchCoreConfig& dispatch,
                                              std::span<const unsigned int> l1_bank_remap,
                                              unsigned long worker_l1_size);
    unsigned long num_devices() const;
};
}  // namespace distributed
}  // namespace tt_metal
}  // namespace tt

using namespace tt::tt_metal;

#ifdef AS_LIBRARY
// Built as a library a program loads with dlopen (as Python loads ttnn's extension,
// which brings libtt_metal.so in): tests/cpp/dlopen_main.cpp runs it.
extern "C" int metal_mock_main(int argc, char** argv) {
#else
int main(int argc, char** argv) {
#endif
    setvbuf(stdout, nullptr, _IONBF, 0);
    tt::ARCH arch = (argc > 1 && strcmp(argv[1], "blackhole") == 0) ? tt::ARCH::BLACKHOLE : tt::ARCH::WORMHOLE_B0;
    const char* chips = getenv("METAL_MOCK_CHIPS");
    unsigned int num_chips = chips ? (unsigned int)strtoul(chips, nullptr, 10) : 1;
    experimental::configure_mock_mode(arch, num_chips);
    DispatchCoreConfig dispatch;
    // METAL_MOCK_L1_SMALL: bytes of L1 reserved for L1_SMALL (0 by default).
    const char* small = getenv("METAL_MOCK_L1_SMALL");
    unsigned long l1_small = small ? strtoul(small, nullptr, 10) : 0;
    std::shared_ptr<distributed::MeshDevice> mesh;
    if (num_chips > 1) {
        static distributed::MeshDeviceConfig whole_system;
        mesh = distributed::MeshDevice::create(whole_system, l1_small, 0, 1, dispatch, {}, 0);
        if (mesh->num_devices() != num_chips) {
            printf("mesh of %lu chips, not %u\n", mesh->num_devices(), num_chips);
            return 1;
        }
    } else {
        mesh = distributed::MeshDevice::create_unit_mesh(0, l1_small, 0, 1, dispatch, {}, 0);
    }
    // A MeshDevice is an IDevice: its primary base is at offset 0.
    IDevice* dev = reinterpret_cast<IDevice*>(mesh.get());
    printf("ready\n");
    std::vector<std::shared_ptr<Buffer>> bufs;
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        unsigned long size = 0, page = 0;
        int type = 0, n = 0;
        if (sscanf(line, "alloc %lu %lu %d", &size, &page, &type) == 3) {
            try {
                auto b = BufferImpl::create(dev, size, page, (BufferType)type, BufferShardingArgs(), std::nullopt,
                                            std::nullopt);
                bufs.push_back(b);
                printf("buf %zu %u %lu\n", bufs.size() - 1, b->address(), (unsigned long)b->aligned_size_per_bank());
            } catch (const std::exception& e) {
                std::string w = e.what();
                for (auto& c : w)
                    if (c == '\n') c = ' ';
                printf("oom %s\n", w.c_str());
            }
        } else if (sscanf(line, "thread %lu %lu %d", &size, &page, &type) == 3) {
            std::shared_ptr<Buffer> b;
            std::string err;
            std::thread t([&] {
                try {
                    b = BufferImpl::create(dev, size, page, (BufferType)type, BufferShardingArgs(), std::nullopt,
                                           std::nullopt);
                } catch (const std::exception& e) {
                    err = e.what();
                }
            });
            t.join();
            if (b) {
                bufs.push_back(b);
                printf("buf %zu %u %lu\n", bufs.size() - 1, b->address(), (unsigned long)b->aligned_size_per_bank());
            } else {
                for (auto& c : err)
                    if (c == '\n') c = ' ';
                printf("oom %s\n", err.c_str());
            }
        } else if (sscanf(line, "free %d", &n) == 1 && n >= 0 && (size_t)n < bufs.size()) {
            bufs[n].reset();
            printf("ok\n");
        } else if (sscanf(line, "loop %d %lu %lu %d", &n, &size, &page, &type) == 4 && n > 0) {
            auto t0 = std::chrono::steady_clock::now();
            for (int k = 0; k < n; k++) {
                auto b = BufferImpl::create(dev, size, page, (BufferType)type, BufferShardingArgs(), std::nullopt,
                                            std::nullopt);
            }
            double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
            printf("ns %.2f\n", ns / (2.0 * n));
        } else if (sscanf(line, "stats %d", &type) == 1) {
            const Allocator& a = *mesh->allocator();
            BufferType t = (BufferType)type;
            Statistics st = a.get_statistics(t);
            HalMemType l1 = HalMemType::L1, dram = HalMemType::DRAM;
            printf("stats %u %lu %u %zu %zu %zu %zu %lu %lu\n", a.get_num_banks(t), a.get_bank_size(t),
                   a.get_alignment(t), st.total_allocatable_size_bytes, st.total_allocated_bytes,
                   st.total_free_bytes, st.largest_free_block_bytes, a.get_base_allocator_addr(l1),
                   a.get_base_allocator_addr(dram));
        } else if (sscanf(line, "cb %lu %lu", &page, &size) == 2) {
            CoreRange range(tt::xy_pair{0, 0}, tt::xy_pair{7, 7});
            auto* cores = new CoreRangeSet(range);
            GraphTracker::instance().track_allocate_cb(*cores, page, size, false, dev);
            printf("ok\n");
        } else if (strncmp(line, "cbfree", 6) == 0) {
            GraphTracker::instance().track_deallocate_cb(dev);
            printf("ok\n");
        } else if (sscanf(line, "sleep %d", &n) == 1) {
            std::this_thread::sleep_for(std::chrono::milliseconds(n));
            printf("ok\n");
        } else if (strncmp(line, "abort", 5) == 0) {
            _exit(0);
        } else if (strncmp(line, "exit", 4) == 0) {
            bufs.clear();
            mesh->close();
            printf("ok\n");
            return 0;
        } else {
            printf("bad %s", line);
        }
    }
    return 0;
}
