#pragma once
// The runtime: compiles a kernel per problem at first use, keeps it on disk and
// in memory, and launches it through the CUDA Driver API.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "convjit/algorithm.hpp"
#include "convjit/conv2d_desc.hpp"
#include "convjit/kernel_info.hpp"
#include "convjit/log_level.hpp"

// Same type as cudaStream_t and CUstream, declared here so users need no CUDA header.
struct CUstream_st;

namespace convjit {

using Stream = CUstream_st*;

// A plan is bound to one CUDA context (one device): its module and workspaces exist
// there only, and run() refuses a stream of another context instead of launching
// into the wrong one. Binding: `device`'s primary context when given, else `stream`'s
// context (both given: they must agree), else the calling thread's current context,
// else RuntimeOptions::device.
struct PlanOptions {
  Algorithm algorithm = Algorithm::kAuto;
  Stream stream = nullptr;    // bind to the context this stream was created in
  std::optional<int> device;  // bind to this device's primary context (the CUDA runtime's)
};

struct RuntimeOptions {
  // Empty: CONVJIT_CACHE_DIR, else $XDG_CACHE_HOME/convjit, else ~/.cache/convjit.
  std::filesystem::path cache_dir;
  bool disk_cache = true;  // false: compile into memory only
  // Device whose primary context is used when a call names no context: no stream,
  // no PlanOptions binding and no context current on the calling thread. Also the
  // device DeviceBuffer allocates on and device_arch() reports.
  int device = 0;
  // Most device memory one plan may hold as scratch (im2col columns), per stream.
  // 0: CONVJIT_WORKSPACE_LIMIT (bytes), else 256 MiB.
  std::uint64_t workspace_limit_bytes = 0;
  // kAuto picks by timing every algorithm once per problem and device, and stores the
  // choice next to the kernels so later processes reuse it. Empty: CONVJIT_AUTOTUNE=1.
  std::optional<bool> autotune;
  // Empty: CONVJIT_LOG_LEVEL (error|warn|info|debug), else warn.
  std::optional<LogLevel> log_level;
  // Serve an existing (e.g. prewarmed, shipped) cache without writing to it: no new
  // entries, no last-used stamps, no eviction. Empty: CONVJIT_CACHE_READONLY=1.
  std::optional<bool> cache_readonly;
  // Byte limit of the disk cache; least recently used entries are evicted past it.
  // Empty: CONVJIT_CACHE_MAX_SIZE (bytes, or with a K/M/G/T suffix), else 4 GiB. 0: no limit.
  std::optional<std::uint64_t> cache_max_bytes;

  // A kernel cache shared by a fleet, behind the disk cache (docs/cache.md, "Remote
  // cache"): redis://[[user][:password]@]host[:port][/db], or rediss:// for TLS. A local
  // miss fetches from it; a compile publishes to it. Empty: CONVJIT_REMOTE_CACHE; "off":
  // none, whatever the environment says.
  std::optional<std::string> remote_cache;
  // The secret every remote entry is signed with (HMAC-SHA256, at least 16 bytes; a
  // "hex:" prefix means hex digits). Entries whose MAC does not verify are refused.
  // Empty: CONVJIT_REMOTE_CACHE_KEY, else the file CONVJIT_REMOTE_CACHE_KEY_FILE (mode
  // 0600). With no key the remote cache stays off: unauthenticated code is never loaded.
  std::optional<std::string> remote_cache_key;
  // Fetch from the remote cache, never publish to it, so that only trusted builders
  // write. Empty: CONVJIT_REMOTE_CACHE_READONLY=1.
  std::optional<bool> remote_cache_readonly;
  // Bounds on one connect and one command; past them the kernel compiles locally and
  // the remote is skipped for a back-off. Empty: CONVJIT_REMOTE_CACHE_CONNECT_TIMEOUT_MS
  // and CONVJIT_REMOTE_CACHE_TIMEOUT_MS, else 200 ms and 1000 ms.
  std::optional<std::chrono::milliseconds> remote_cache_connect_timeout;
  std::optional<std::chrono::milliseconds> remote_cache_timeout;

  // The first tier (docs/perf.md, "The first tier"): a conv2d call whose kernel
  // is in no cache runs a shape-generic kernel built with convjit, which needs no
  // compile, while the problem's own kernel compiles on a background thread; later calls
  // run that kernel once it is ready. The first result then costs the generic kernel's
  // run (slower than the specialized kernel's, float32 FMA arithmetic in every mode)
  // instead of a compile (about a second for the tensor-core kernels). Only
  // Runtime::conv2d: plans and inspect compile as they always do; a call on a capturing
  // stream, with packed weights, or under autotuning waits for its kernel, as do
  // problems whose generic run would take longer than a compile. On by default: the first
  // calls' results are within every math mode's tolerance, but not bit for bit the
  // specialized kernel's (false, or CONVJIT_FIRST_TIER=0, for first calls that are).
  // Empty: CONVJIT_FIRST_TIER (0 turns it off), else on.
  std::optional<bool> first_tier;
};

// How this Runtime uses its disk cache (docs/cache.md).
enum class DiskCacheMode { kReadWrite, kReadOnly, kOff };
// How this Runtime uses the remote cache; kOff also when none is configured.
enum class RemoteCacheMode { kOff, kReadWrite, kReadOnly };

// Counters since the Runtime was made. Every counter only grows.
struct CacheStats {
  std::uint64_t memory_hits = 0;          // served from this process's table
  std::uint64_t disk_hits = 0;            // entry read and verified from disk (perhaps after a lock wait)
  std::uint64_t misses = 0;               // not in memory nor on disk: built here
  std::uint64_t compiles = 0;             // NVRTC runs
  std::uint64_t corrupt_rebuilt = 0;      // disk entries that failed verification or trust checks, rebuilt
  std::uint64_t disk_writes = 0;          // entries published to disk
  std::uint64_t disk_write_errors = 0;    // entries that could not be published (they stay in memory)
  std::uint64_t module_loads = 0;         // CUBINs loaded into a CUDA context
  std::uint64_t evictions = 0;            // entries this process evicted to keep the cache under its limit
  std::uint64_t bytes_read = 0;           // entry bytes read from disk on hits
  std::uint64_t bytes_written = 0;        // entry bytes published
  std::uint64_t lock_waits = 0;           // misses that waited for another process compiling the same key
  std::uint64_t lock_takeovers = 0;       // compile locks taken over from a process that died holding them
  std::uint64_t lock_timeouts = 0;        // waits that ran out, after which this process compiled too
  std::uint64_t autotune_runs = 0;        // problems whose algorithms were timed in this process
  std::uint64_t autotune_reused = 0;      // problems that took a choice stored by an earlier tuning
  std::uint64_t first_tier_runs = 0;      // conv2d calls the first tier's generic kernel ran
  std::uint64_t background_builds = 0;    // plans built behind the first tier
  std::uint64_t background_failures = 0;  // of those, builds that failed (the next call builds and reports)
  double compile_ms = 0;                  // wall time spent in NVRTC
  double compile_ms_saved = 0;            // compile time recorded in the entries that disk hits served
  // Where a start goes besides NVRTC, wall ms summed over every request (docs/perf.md):
  double key_ms = 0;            // specializing the source and computing its cache key
  double disk_read_ms = 0;      // opening and reading disk entries
  double disk_verify_ms = 0;    // checking entries read: checksum, key, format
  double module_load_ms = 0;    // cuModuleLoadData of CUBINs and looking up their kernels
  double function_load_ms = 0;  // loading those kernels onto the device (done here, not at their first launch)
  DiskCacheMode disk_mode = DiskCacheMode::kReadWrite;
  std::string disk_note;  // why the disk cache is read-only or off; empty when read-write
  // The remote cache (docs/cache.md, "Remote cache"). Each request that reaches it ends
  // as one of: a hit, a miss, a reject or unavailable (then it was compiled here).
  std::uint64_t remote_hits = 0;            // verified entries fetched (perhaps after waiting for another node)
  std::uint64_t remote_misses = 0;          // no entry there: compiled here (and published unless read-only)
  std::uint64_t remote_rejects = 0;         // entries refused (MAC, another key, corrupt): compiled here
  std::uint64_t remote_unavailable = 0;     // the remote failed or was backing off: compiled here
  std::uint64_t remote_timeouts = 0;        // connects and commands that ran past their bound
  std::uint64_t remote_errors = 0;          // other failed calls: refused connections, drops, error replies
  std::uint64_t remote_skipped = 0;         // requests that did not ask the remote: it was backing off
  std::uint64_t remote_publishes = 0;       // entries published
  std::uint64_t remote_lock_waits = 0;      // misses that waited for another node compiling the same key
  std::uint64_t remote_lock_takeovers = 0;  // fleet locks taken after their holder let go without publishing
  std::uint64_t remote_lock_timeouts = 0;   // waits that ran out, after which this node compiled too
  std::uint64_t remote_bytes_read = 0;
  std::uint64_t remote_bytes_written = 0;
  double remote_ms = 0;  // wall time inside remote calls (not the pauses of a wait)
  RemoteCacheMode remote_mode = RemoteCacheMode::kOff;
  std::string remote_note;  // where the remote cache is (no secrets), or why it is off; empty when not configured
};

struct PrewarmResult {
  std::size_t compiled = 0;        // compiled now
  std::size_t already_cached = 0;  // found in memory, on disk or in the remote cache
  std::size_t failed = 0;
  std::vector<std::string> errors;  // one line per failed descriptor
};

class Runtime;

// Everything one run reads and writes (cuDNN frontend's variant pack). Device pointers.
// Each may sit at any offset its dtype allows (4 bytes for f32, 2 for f16 and bf16):
// the plan checks the alignment actually present on every run and launches a kernel
// compiled for it. A pointer no dtype allows gets kInvalidArgument, nothing launched.
struct Conv2dArgs {
  const void* x = nullptr;
  // The weights as the descriptor lays them out (k, c / groups, r, s). Null when
  // `packed_w` is given.
  const void* w = nullptr;
  // The weights already in the kernel's own layout, written by Conv2dPlan::pack_weights
  // (only for plans with packed_weight_bytes() > 0): the run skips the pack kernel.
  // For inference, where weights do not change, pack once and run many times.
  const void* packed_w = nullptr;
  const void* bias = nullptr;  // k elements; given exactly when the descriptor has bias
  void* y = nullptr;
  // Caller scratch of at least Conv2dPlan::workspace_bytes() bytes, 16-byte aligned,
  // used only by work enqueued on the run's stream (cuDNN's execute(..., workspace),
  // CUTLASS's get_workspace_size / run). Null: the plan's own workspace for the stream,
  // made on the stream's first run (see Conv2dPlan::prepare). Threads may run one plan
  // on one stream at once: each run's launches over that workspace are enqueued together.
  // CU_STREAM_PER_THREAD is a stream a thread, so each thread gets a workspace of its own
  // (kept while the plan lives). A caller workspace is used as given: runs that may
  // overlap on the device need one each.
  void* workspace = nullptr;
  std::uint64_t workspace_bytes = 0;
  // The batch of x and y in this run. 0: the descriptor's n. A descriptor with
  // dynamic_batch takes any batch from 1 to its n with the same kernel; any other takes
  // only its own n. Anything else is kInvalidArgument, nothing launched.
  int n = 0;
};

// A problem bound to its compiled kernel and launch geometry. run() does no
// hashing and no lookup: it checks its arguments, fills the argument block and launches.
//
// CUDA graphs: a run on a capturing stream never allocates, creates handles or
// synchronizes when it is given a workspace (or needs none), or when the stream ran
// this plan before (prepare() does that without a launch). A first run on a stream that
// is already capturing makes its per-stream workspace with the thread's capture mode
// relaxed, which leaves the capture valid; Runtime::conv2d's first use of a problem
// inside a capture compiles and loads the same way.
class Conv2dPlan {
 public:
  const Conv2dDesc& desc() const noexcept;
  Algorithm algorithm() const noexcept;  // never kAuto
  // Scratch a run needs when it is given `w` (not `packed_w`): the packed weights of the
  // wgmma kernel (and, where it splits the reduction, its fp32 partial sums; where an NCHW
  // problem runs through the NHWC kernel, its NHWC copies of x and y), the im2col
  // columns and cuBLAS's workspace. Runs with `packed_w` need none, except im2col plans
  // (whose packed_weight_bytes() is 0), split wgmma plans and NCHW-through-NHWC plans (the
  // workspace_bytes() - packed_weight_bytes() after the packed weights suffice).
  std::uint64_t workspace_bytes() const noexcept;
  // Bytes of the weights in the kernel's own layout; 0 when the kernel reads `w` as it is.
  std::uint64_t packed_weight_bytes() const noexcept;
  // Enqueues the pack of `w` into `packed` (packed_weight_bytes(), 16-byte aligned) on
  // `stream`. Throws kInvalidArgument when this plan reads its weights as they are.
  void pack_weights(const void* w, void* packed, Stream stream = nullptr) const;
  // What the fastest kernel needs of each pointer (KernelInfo::alignment).
  AlignmentNeeds alignment() const noexcept;
  const std::string& kernel_name() const noexcept;
  int device() const noexcept;  // ordinal of the device of the context the plan is bound to
  // Makes the plan's own per-stream workspace (and anything else a first run on
  // `stream` would make) now, without launching: call it before capturing a graph on
  // `stream` when runs there get no caller workspace.
  void prepare(Stream stream = nullptr) const;
  // Throws kInvalidArgument, launching nothing, when `stream` (or, for the null
  // stream, the current context) belongs to another context than the plan's, or when
  // a pointer is null, misaligned for its dtype, or a workspace too small.
  void run(const Conv2dArgs& args, Stream stream = nullptr) const;
  void run(const void* x, const void* w, const void* bias, void* y, Stream stream = nullptr) const;

 private:
  friend class Runtime;
  struct Impl;
  explicit Conv2dPlan(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

class Runtime {
 public:
  explicit Runtime(RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // y = conv2d(x, w) (+ bias) on raw device pointers, enqueued on `stream`
  // (nullptr: the legacy default stream). Bad arguments throw before any launch.
  // Runs in the stream's own context, so one Runtime serves every device and context:
  // kernels compile once per arch and load once per context. For the null stream, the
  // current context, else RuntimeOptions::device's primary context.
  void conv2d(const Conv2dDesc& desc, const void* x, const void* w, const void* bias, void* y, Stream stream = nullptr);
  void conv2d(const Conv2dDesc& desc, const Conv2dArgs& args, Stream stream = nullptr);

  // Throws Error(kUnsupported) when a forced algorithm cannot run this problem.
  Conv2dPlan plan(const Conv2dDesc& desc, PlanOptions options = {});

  // Compiles and caches every descriptor. With `arch` (e.g. "sm_90") no GPU is needed.
  PrewarmResult prewarm(std::span<const Conv2dDesc> descs, std::optional<std::string> arch = {});

  // The specialized source of the kernel kAuto runs on `arch` (empty: the device's), the
  // same kernel inspect() shows; with `arch` it needs no GPU, and never a compile.
  std::string source(const Conv2dDesc& desc, std::optional<std::string> arch = {});
  // The PTX (compiling or reading the cache); with `arch` no GPU is needed.
  std::string ptx(const Conv2dDesc& desc, std::optional<std::string> arch = {});
  KernelInfo inspect(const Conv2dDesc& desc, std::optional<std::string> arch = {}, PlanOptions options = {});

  // Returns once every kernel the first tier stands in for is built (or its build failed),
  // so that the next conv2d of each problem runs its specialized kernel: before capturing
  // graphs or timing. Returns at once without RuntimeOptions::first_tier.
  void wait_for_compiles();

  // Waits for all work on `stream` (nullptr: the legacy default stream of the context
  // conv2d would use).
  void synchronize(Stream stream = nullptr);

  CacheStats stats() const;
  const std::filesystem::path& cache_dir() const noexcept;
  // RuntimeOptions::device's arch ("sm_90"); throws kNoDriver / kNoDevice without a GPU.
  std::string device_arch();

  // Opaque: defined inside the library, reachable from no public header.
  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The default cache directory from the environment (see RuntimeOptions::cache_dir).
std::filesystem::path default_cache_dir();

}  // namespace convjit
