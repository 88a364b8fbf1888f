#pragma once
// A CUDA driver for CPU tests: a shared library with the SONAME libcuda.so.1 that the
// runtime's dlopen("libcuda.so.1") finds instead of NVIDIA's, so that the launch path
// (plans, module loads, pointer checks, workspaces, launches, error handling) runs on a
// machine without a GPU. Nothing is computed: launches are recorded, not run.
//
// The device: one "Fake H200", compute capability 9.0 (the runtime picks its Hopper
// kernels, which NVRTC compiles on the CPU), 132 multiprocessors, no pageable memory
// access. Device memory is host memory, 256-byte aligned, so copies to and from it work.
//
// How a test reaches it: the test executable links the library (CMake target
// convjit_fake_cuda_driver). The dynamic loader then maps it as libcuda.so.1 before main,
// and the runtime's dlopen of that name returns the object already loaded instead of
// searching the disk, so a real driver on the machine is never picked up. Only the
// fake-driver test executable links it; every other test binary sees the real driver.
//
// NOTE: the fake serves the runtime's own entry points only. cuBLAS reaches the driver
// through the CUDA runtime, which would find this library too and fail on entry points it
// does not have: tests that use it stay away from Algorithm::kIm2colGemm.

#include <cuda.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace convjit::testing {

// One cuLaunchKernel the fake accepted.
struct FakeLaunch {
  std::string function;  // the kernel's name, as looked up with cuModuleGetFunction
  unsigned grid[3] = {};
  unsigned block[3] = {};
  unsigned shared_bytes = 0;
  CUstream stream = nullptr;
  CUcontext context = nullptr;  // the context current on the launching thread
  bool captured = false;        // the stream was capturing: the launch went into the graph
  // Each parameter's value, as many as the kernel declares in its CUBIN (pointers as
  // addresses); empty when the image was not a CUBIN.
  std::vector<std::uint64_t> args;

  const void* pointer_arg(std::size_t index) const {
    return reinterpret_cast<const void*>(static_cast<std::uintptr_t>(args.at(index)));
  }
};

// One cuTensorMapEncodeIm2col call the fake accepted: its arguments, arrays read to the
// rank's length. The map it wrote holds the address in its first 8 bytes (so a launch's
// recorded parameter names the x it was encoded for) and the encode's serial in the next.
struct FakeIm2colEncode {
  CUtensorMapDataType dtype{};
  unsigned rank = 0;
  const void* address = nullptr;
  std::vector<std::uint64_t> dims;     // rank entries
  std::vector<std::uint64_t> strides;  // rank - 1 entries
  std::vector<int> lower, upper;       // rank - 2 entries each
  unsigned channels_per_pixel = 0;
  unsigned pixels_per_column = 0;
  std::vector<unsigned> element_strides;  // rank entries
  CUtensorMapInterleave interleave{};
  CUtensorMapSwizzle swizzle{};
  CUtensorMapL2promotion l2_promotion{};
  CUtensorMapFloatOOBfill oob_fill{};
};

// One cuTensorMapEncodeTiled call the fake accepted, arrays read to the rank's length.
// The map it wrote holds the address in its first 8 bytes and the encode's serial in the
// next, as FakeIm2colEncode's.
struct FakeTiledEncode {
  CUtensorMapDataType dtype{};
  unsigned rank = 0;
  const void* address = nullptr;
  std::vector<std::uint64_t> dims;     // rank entries
  std::vector<std::uint64_t> strides;  // rank - 1 entries
  std::vector<unsigned> box;           // rank entries
  std::vector<unsigned> element_strides;
  CUtensorMapSwizzle swizzle{};
  CUtensorMapFloatOOBfill oob_fill{};
};

// The control panel of the fake driver (one per process).
class FakeCudaDriver {
 public:
  // Forgets injected faults, recorded calls and launches, counters and capture flags.
  // Contexts, modules, streams and memory that live objects still hold stay.
  void reset();

  // The next `times` calls of `entry_point` (named as in cuda_driver.hpp, e.g.
  // "cuModuleLoadData") return `result` and do nothing else; times < 0: every later call.
  void fail_next(std::string_view entry_point, CUresult result, int times = 1);

  // Calls of `entry_point` since reset(), failed ones included.
  std::uint64_t calls(std::string_view entry_point) const;
  // Launches the fake accepted since reset(), in order.
  std::vector<FakeLaunch> launches() const;
  std::uint64_t allocations() const;      // successful cuMemAlloc calls since reset()
  std::uint64_t module_loads() const;     // successful cuModuleLoadData calls since reset()
  std::string last_module_image() const;  // the bytes of the last image loaded
  // cuTensorMapEncodeIm2col calls that succeeded since reset(), in order. The fake checks
  // what the driver's documentation requires (ranks, alignments, strides, corner and
  // offset ranges, box sizes, the swizzle's inner-dimension bound) and answers
  // CUDA_ERROR_INVALID_VALUE, recording nothing, where an argument breaks it.
  std::vector<FakeIm2colEncode> im2col_encodes() const;
  // cuTensorMapEncodeTiled calls that succeeded since reset(), in order, checked as the
  // im2col encodes are (box sizes, the swizzle's inner-dimension bound among them).
  std::vector<FakeTiledEncode> tiled_encodes() const;
  std::size_t live_allocations() const;  // cuMemAlloc'd and not yet freed (test buffers too)
  std::size_t live_modules() const;
  // Allocations and modules that were still alive when their context went away (the last
  // primary-context reference released, or cuCtxDestroy): the owner freed them too late.
  std::uint64_t destroyed_with_context() const;
  int primary_context_references() const;

  // Graph capture. A stream set capturing reports CU_STREAM_CAPTURE_STATUS_ACTIVE; while
  // any stream captures, a thread whose capture mode is not relaxed that calls cuMemAlloc,
  // cuMemFree, cuModuleLoadData, cuModuleUnload, a synchronous copy or a synchronize gets
  // CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, and every capturing stream is invalidated, as
  // the real driver does in global capture mode.
  void set_capturing(CUstream stream, bool capturing);
  bool capture_invalidated(CUstream stream) const;
  std::uint64_t capture_invalidations() const;             // since reset()
  CUstreamCaptureMode thread_capture_mode() const;         // the calling thread's
  void set_thread_capture_mode(CUstreamCaptureMode mode);  // the calling thread's

  // Objects for the test itself, made without the entry points (so neither counted nor
  // subject to injected faults). Each holds a reference to the primary context while it
  // lives, as the CUDA runtime's objects would.
  CUcontext primary_context() const;
  CUdeviceptr allocate(std::size_t bytes, CUcontext context = nullptr);  // nullptr: primary
  void free(CUdeviceptr pointer);
  CUstream create_stream(CUcontext context = nullptr);  // nullptr: primary
  void destroy_stream(CUstream stream);
  // A second context on the device (cuCtxCreate's), current on no thread.
  CUcontext create_context();
  void destroy_context(CUcontext context);
};

}  // namespace convjit::testing

extern "C" convjit::testing::FakeCudaDriver* convjit_fake_cuda_driver();
