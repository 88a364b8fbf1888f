// The fake CUDA driver itself: that the runtime really loads it, and that it catches what
// the launch tests rely on it to catch. A fake that let a capture-unsafe call through
// would make every "the capture stayed valid" check pass for nothing.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "driver/cuda_driver.hpp"
#include "driver/device_context.hpp"
#include "support/fake_driver_test.hpp"

namespace convjit {
namespace {

using testing::FakeBuffer;
using testing::FakeStream;

class FakeDriver : public testing::FakeDriverTest {};

TEST_F(FakeDriver, TheRuntimeLoadsTheFakeInsteadOfARealDriver) {
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(CudaDriver::get().cuInit), &info), 0);
  EXPECT_NE(std::string(info.dli_fname).find("fake_cuda_driver/libcuda.so.1"), std::string::npos) << info.dli_fname;
  Runtime rt(options());
  EXPECT_EQ(rt.device_arch(), "sm_90");
}

TEST_F(FakeDriver, AnUnknownEntryPointIsNotFound) {
  using GetProcAddress = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
  void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  ASSERT_NE(library, nullptr);
  auto get_proc = reinterpret_cast<GetProcAddress>(dlsym(library, "cuGetProcAddress_v2"));
  ASSERT_NE(get_proc, nullptr);
  void* function = &library;
  CUdriverProcAddressQueryResult status{};
  EXPECT_EQ(get_proc("cuNoSuchEntryPoint", &function, kDriverAbiVersion, 0, &status), CUDA_ERROR_NOT_FOUND);
  EXPECT_EQ(function, nullptr);
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
  // cuCtxCreate asked at a version whose symbol has another signature (cuCtxCreate_v3).
  EXPECT_EQ(get_proc("cuCtxCreate", &function, kDriverAbiVersion, 0, &status), CUDA_ERROR_NOT_FOUND);
  dlclose(library);
}

TEST_F(FakeDriver, CaptureUnsafeCallsFailAndInvalidateTheCaptureUnlessTheThreadRelaxedItsMode) {
  auto& drv = CudaDriver::get();
  FakeStream stream;
  fake().set_capturing(stream.get(), true);
  ScopedContext scope(fake().primary_context());
  CUdeviceptr pointer = 0;
  EXPECT_EQ(drv.cuMemAlloc(&pointer, 64), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
  EXPECT_TRUE(fake().capture_invalidated(stream.get()));
  CUstreamCaptureStatus status{};
  ASSERT_EQ(drv.cuStreamIsCapturing(stream.get(), &status), CUDA_SUCCESS);
  EXPECT_EQ(status, CU_STREAM_CAPTURE_STATUS_INVALIDATED);

  fake().set_capturing(stream.get(), true);  // a fresh capture
  CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
  ASSERT_EQ(drv.cuThreadExchangeStreamCaptureMode(&mode), CUDA_SUCCESS);
  EXPECT_EQ(mode, CU_STREAM_CAPTURE_MODE_GLOBAL);
  ASSERT_EQ(drv.cuMemAlloc(&pointer, 64), CUDA_SUCCESS);
  EXPECT_EQ(drv.cuMemFree(pointer), CUDA_SUCCESS);
  ASSERT_EQ(drv.cuThreadExchangeStreamCaptureMode(&mode), CUDA_SUCCESS);
  EXPECT_FALSE(fake().capture_invalidated(stream.get()));
  EXPECT_EQ(fake().capture_invalidations(), 1u);
}

TEST_F(FakeDriver, PointersInsideAnAllocationAreDeviceMemoryOthersAreUnknown) {
  auto& drv = CudaDriver::get();
  FakeBuffer buffer(1000);
  unsigned type = 0;
  EXPECT_EQ(
      drv.cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, reinterpret_cast<CUdeviceptr>(buffer.at(999))),
      CUDA_SUCCESS);
  EXPECT_EQ(type, CU_MEMORYTYPE_DEVICE);
  std::vector<float> host(16);
  EXPECT_EQ(
      drv.cuPointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, reinterpret_cast<CUdeviceptr>(host.data())),
      CUDA_ERROR_INVALID_VALUE);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer.at()) % 256, 0u);
}

TEST_F(FakeDriver, InjectedFaultsHitTheNextCallsOnly) {
  auto& drv = CudaDriver::get();
  const FakeStream stream;  // holds the primary context, as the CUDA runtime would
  ScopedContext scope(fake().primary_context());
  fake().fail_next("cuMemAlloc", CUDA_ERROR_OUT_OF_MEMORY, 2);
  CUdeviceptr pointer = 0;
  EXPECT_EQ(drv.cuMemAlloc(&pointer, 64), CUDA_ERROR_OUT_OF_MEMORY);
  EXPECT_EQ(drv.cuMemAlloc(&pointer, 64), CUDA_ERROR_OUT_OF_MEMORY);
  ASSERT_EQ(drv.cuMemAlloc(&pointer, 64), CUDA_SUCCESS);
  EXPECT_EQ(drv.cuMemFree(pointer), CUDA_SUCCESS);
  EXPECT_EQ(fake().calls("cuMemAlloc"), 3u);
  EXPECT_EQ(fake().allocations(), 1u);
}

// A warm plan loads its module from the CUBIN without reading the entry's PTX or source:
// damage there costs the plan nothing, and inspect, which reads them, finds and rebuilds it.
TEST_F(FakeDriver, AWarmPlanLoadsTheVerifiedCubinAndLeavesADamagedPtxToInspect) {
  const Conv2dDesc d{.n = 1, .c = 16, .h = 8, .w = 8, .k = 32, .r = 3, .s = 3};
  std::filesystem::path entry;
  {
    Runtime rt(options());
    rt.plan(d);
    entry = rt.inspect(d).cache_path;
    ASSERT_EQ(rt.stats().compiles, 1u);
  }
  std::string bytes;
  {
    std::ifstream in(entry, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::size_t ptx_header = bytes.find("\nptx ") + 1;
  bytes[bytes.find('\n', ptx_header) + 1] ^= 0x01;
  std::ofstream(entry, std::ios::binary | std::ios::trunc) << bytes;

  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(d);
  const CacheStats warm = rt.stats();
  EXPECT_EQ(warm.disk_hits, 1u);
  EXPECT_EQ(warm.compiles, 0u);
  EXPECT_EQ(warm.corrupt_rebuilt, 0u);
  EXPECT_EQ(warm.module_loads, 1u);
  EXPECT_LT(warm.bytes_read, bytes.size() / 2) << "the plan read the PTX or the source";
  const KernelInfo info = rt.inspect(d);
  EXPECT_EQ(rt.stats().corrupt_rebuilt, 1u);
  EXPECT_EQ(rt.stats().compiles, 1u);
  EXPECT_NE(info.ptx.find(".entry " + info.kernel_name), std::string::npos);
  EXPECT_EQ(rt.stats().module_loads, 1u) << "the plan's module, from the verified CUBIN, stays";
}

TEST_F(FakeDriver, InspectAfterAWarmPlanReadsTheWholeEntryOnceWithoutCountingAnotherHit) {
  const Conv2dDesc d{.n = 1, .c = 16, .h = 8, .w = 8, .k = 32, .r = 3, .s = 3};
  KernelInfo first;
  {
    Runtime rt(options());
    first = rt.inspect(d);
  }
  Runtime rt(options());
  rt.plan(d);
  const std::uint64_t plan_bytes = rt.stats().bytes_read;
  EXPECT_LT(plan_bytes, std::filesystem::file_size(first.cache_path) / 2);
  const KernelInfo info = rt.inspect(d);
  EXPECT_EQ(info.ptx, first.ptx);
  EXPECT_EQ(info.cubin, first.cubin);
  EXPECT_EQ(rt.stats().compiles, 0u);
  EXPECT_EQ(rt.stats().disk_hits, 1u) << "inspect's whole read of the entry the plan loaded is not another hit";
  EXPECT_EQ(rt.stats().bytes_read, plan_bytes + std::filesystem::file_size(first.cache_path));
  rt.inspect(d);
  EXPECT_EQ(rt.stats().bytes_read, plan_bytes + std::filesystem::file_size(first.cache_path))
      << "the whole artifact stays in memory";
}

}  // namespace
}  // namespace convjit
