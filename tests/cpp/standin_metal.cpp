// standin_metal.cpp: a stand-in for libtt_metal.so of another TT-Metal version: its
// IGraphProcessor declares the members tttrack knows in another order (track_deallocate
// before track_allocate), so its table's slots are laid out otherwise. tttrack must
// refuse to hook it, and the program must run on.
#include <any>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace tt {
namespace tt_metal {
class Buffer;
class IDevice;
class Program;
class CoreRangeSet;
struct TrackedArgument;
class IGraphProcessor {
   public:
    enum class RunMode { NORMAL, NO_DISPATCH };
    virtual bool is_capture_processor() const;
    virtual void track_deallocate(Buffer* buffer);
    virtual void track_allocate(const Buffer* buffer);
    virtual void track_allocate_cb(const CoreRangeSet&, unsigned long, unsigned long, bool, const IDevice*);
    virtual void track_allocate_dataflow_buffer(const CoreRangeSet&, unsigned long, unsigned long, bool, const IDevice*);
    virtual void track_allocate_scratchpad(const CoreRangeSet&, unsigned long, unsigned long, const IDevice*);
    virtual void track_deallocate_cb(const IDevice*);
    virtual void track_program(Program*, const IDevice*);
    virtual void track_function_start(std::string_view, std::span<TrackedArgument>);
    virtual void track_function_end();
    virtual void track_function_end(const std::any&);
    virtual void begin_capture(RunMode);
    virtual std::string end_capture();
    virtual ~IGraphProcessor();
};
bool IGraphProcessor::is_capture_processor() const { return false; }
void IGraphProcessor::track_deallocate(Buffer*) {}
void IGraphProcessor::track_allocate(const Buffer*) {}
void IGraphProcessor::track_allocate_cb(const CoreRangeSet&, unsigned long, unsigned long, bool, const IDevice*) {}
void IGraphProcessor::track_allocate_dataflow_buffer(const CoreRangeSet&, unsigned long, unsigned long, bool, const IDevice*) {}
void IGraphProcessor::track_allocate_scratchpad(const CoreRangeSet&, unsigned long, unsigned long, const IDevice*) {}
void IGraphProcessor::track_deallocate_cb(const IDevice*) {}
void IGraphProcessor::track_program(Program*, const IDevice*) {}
void IGraphProcessor::track_function_start(std::string_view, std::span<TrackedArgument>) {}
void IGraphProcessor::track_function_end() {}
void IGraphProcessor::track_function_end(const std::any&) {}
void IGraphProcessor::begin_capture(RunMode) {}
std::string IGraphProcessor::end_capture() { return {}; }
IGraphProcessor::~IGraphProcessor() {}

class GraphTracker {
   public:
    static GraphTracker& instance();
    void push_processor(const std::shared_ptr<IGraphProcessor>& p);
};
GraphTracker& GraphTracker::instance() {
    static GraphTracker t;
    return t;
}
void GraphTracker::push_processor(const std::shared_ptr<IGraphProcessor>&) {}
}  // namespace tt_metal
}  // namespace tt

// A processor of its own, so the table is emitted and used.
extern "C" void standin_metal_touch() {
    auto p = std::make_shared<tt::tt_metal::IGraphProcessor>();
    tt::tt_metal::GraphTracker::instance().push_processor(p);
}
