// fake_metal.cpp: a stand-in for an instrumented libtt_metal.so. It carries its own
// socket-based AllocationClient, like the original (a mutex, a blocking send() of the
// 144-byte AllocMessage), and a function that allocates like a model would, calling it.
// Every message its socket code sends is also counted in $FAKE_METAL_MARK, so a test
// can tell whether that code ran at all.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace tt::tt_metal {

class AllocationClient {
public:
    static void report_allocation(int device_id, uint64_t size, uint8_t buffer_type, uint64_t buffer_id);
    static void report_deallocation(int device_id, uint64_t buffer_id);
    static void report_cb_allocation(int device_id, uint64_t size, uint64_t cb_id);
    static void report_cb_deallocation(int device_id, uint64_t size, uint64_t cb_id);
    static void report_kernel_load(int device_id, uint64_t size, uint64_t kernel_id, uint8_t kernel_type);
    static void report_kernel_unload(int device_id, uint64_t size, uint64_t kernel_id);
    static bool is_enabled();
};

namespace {
std::mutex mu;
int fd = -1;

void send_msg(uint8_t type, int32_t device, uint64_t size, uint8_t btype, uint64_t id) {
    std::lock_guard<std::mutex> g(mu);
    if (fd < 0) {
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        const char* p = getenv("FAKE_METAL_SOCKET");
        strncpy(a.sun_path, p ? p : "/tmp/tt_allocation_server.sock", sizeof(a.sun_path) - 1);
        if (connect(fd, (sockaddr*)&a, sizeof(a)) != 0) { close(fd); fd = -1; return; }
    }
    unsigned char m[144] = {0};
    m[0] = type;
    memcpy(m + 4, &device, 4);
    memcpy(m + 8, &size, 8);
    m[16] = btype;
    int32_t pid = 1;  // claims to be init: the server must use the real peer pid
    memcpy(m + 20, &pid, 4);
    memcpy(m + 24, &id, 8);
    send(fd, m, sizeof(m), 0);
    if (const char* mark = getenv("FAKE_METAL_MARK")) {
        FILE* f = fopen(mark, "a");
        if (f) { fputs("sent\n", f); fclose(f); }
    }
}
}  // namespace

void AllocationClient::report_allocation(int d, uint64_t s, uint8_t t, uint64_t id) { send_msg(1, d, s, t, id); }
void AllocationClient::report_deallocation(int d, uint64_t id) { send_msg(2, d, 0, 0, id); }
void AllocationClient::report_cb_allocation(int d, uint64_t s, uint64_t id) { send_msg(8, d, s, 0, id); }
void AllocationClient::report_cb_deallocation(int d, uint64_t s, uint64_t id) { send_msg(9, d, s, 0, id); }
void AllocationClient::report_kernel_load(int d, uint64_t s, uint64_t id, uint8_t t) { send_msg(10, d, s, t, id); }
void AllocationClient::report_kernel_unload(int d, uint64_t s, uint64_t id) { send_msg(11, d, s, 0, id); }
bool AllocationClient::is_enabled() {
    const char* e = getenv("TT_ALLOC_TRACKING_ENABLED");
    return e && strcmp(e, "1") == 0;
}

}  // namespace tt::tt_metal

// What a model run does to the allocator, as GraphTracker would report it.
extern "C" void fake_metal_run(int layers) {
    using tt::tt_metal::AllocationClient;
    if (!AllocationClient::is_enabled()) return;
    AllocationClient::report_kernel_load(0, 262144, 0xD1, 2);   // dispatch, persistent
    for (int i = 0; i < layers; i++) {
        AllocationClient::report_allocation(0, 1 << 20, 0, 0x100000ull * (i + 1));   // weights
        AllocationClient::report_allocation(1, 65536, 1, 0x2000ull * (i + 1));        // activations
        AllocationClient::report_cb_allocation(1, 32768, 0x30 + i);
        AllocationClient::report_kernel_load(1, 8192, 0x500 + i, 0);
        AllocationClient::report_allocation(0, 1 << 20, 0, 0x100000ull * (i + 1));   // program cache
    }
    for (int i = 0; i < layers; i += 2) {
        AllocationClient::report_deallocation(1, 0x2000ull * (i + 1));
        AllocationClient::report_cb_deallocation(1, 32768, 0x30 + i);
        AllocationClient::report_kernel_unload(1, 8192, 0x500 + i);
        AllocationClient::report_deallocation(0, 0x100000ull * (i + 1));           // drops one reference
    }
}
