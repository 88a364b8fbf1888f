#pragma once
// What the launch tests share: a fixture that resets the fake CUDA driver and gives each
// test its own cache directory, device memory and streams from the fake, checks that runs
// on a capturing stream went into its capture, and a check for the code and words of a
// thrown convjit::Error.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "convjit/convjit.hpp"
#include "support/fake_cuda_driver.hpp"
#include "support/scoped_env.hpp"
#include "support/temp_dir.hpp"

namespace convjit::testing {

inline FakeCudaDriver& fake_driver() { return *convjit_fake_cuda_driver(); }

class FakeStream;

class FakeDriverTest : public ::testing::Test {
 protected:
  void SetUp() override { fake_driver().reset(); }
  void TearDown() override { fake_driver().reset(); }

  // Autotuning off whatever CONVJIT_AUTOTUNE says: the algorithm each test names is the one it gets.
  RuntimeOptions options() const { return RuntimeOptions{.cache_dir = dir_.path() / "cache", .autotune = false}; }
  FakeCudaDriver& fake() const { return fake_driver(); }
  std::size_t launch_count() const { return fake().launches().size(); }
  // The launches after the first `from`.
  std::vector<FakeLaunch> launches_since(std::size_t from) const {
    auto all = fake().launches();
    return std::vector<FakeLaunch>(all.begin() + static_cast<std::ptrdiff_t>(std::min(from, all.size())), all.end());
  }
  // No run on `stream` invalidated its capture (nor any other).
  void expect_capture_valid(const FakeStream& stream) const;
  // Every launch since `from`, `count` of them, went into the capture of `stream`.
  void expect_captured(std::size_t from, std::size_t count, const FakeStream& stream) const;

  TempDir dir_;
  // The launch tests count and inspect the launches of the NCHW kernels they name; the
  // route through the NHWC kernel, which the cost model picks for some of their problems,
  // has its own tests (NchwViaNhwcLaunch, which sets it on over this).
  ScopedEnv nchw_kernels_{"CONVJIT_NCHW_VIA_NHWC", "0"};
};

// Device memory of the fake driver (host memory it knows), freed with the object.
class FakeBuffer {
 public:
  explicit FakeBuffer(std::size_t bytes, CUcontext context = nullptr)
      : pointer_(fake_driver().allocate(bytes, context)) {}
  ~FakeBuffer() { fake_driver().free(pointer_); }
  FakeBuffer(const FakeBuffer&) = delete;
  FakeBuffer& operator=(const FakeBuffer&) = delete;

  void* at(std::size_t offset = 0) const {
    return reinterpret_cast<void*>(static_cast<std::uintptr_t>(pointer_ + offset));
  }

 private:
  CUdeviceptr pointer_;
};

// A stream of the fake driver (in the primary context unless told), destroyed with the object.
class FakeStream {
 public:
  explicit FakeStream(CUcontext context = nullptr) : stream_(fake_driver().create_stream(context)) {}
  ~FakeStream() { fake_driver().destroy_stream(stream_); }
  FakeStream(const FakeStream&) = delete;
  FakeStream& operator=(const FakeStream&) = delete;

  CUstream get() const { return stream_; }
  operator Stream() const { return reinterpret_cast<Stream>(stream_); }  // NOLINT: used as convjit's Stream

 private:
  CUstream stream_;
};

inline void FakeDriverTest::expect_capture_valid(const FakeStream& stream) const {
  EXPECT_FALSE(fake().capture_invalidated(stream.get()));
  EXPECT_EQ(fake().capture_invalidations(), 0u);
}

inline void FakeDriverTest::expect_captured(std::size_t from, std::size_t count, const FakeStream& stream) const {
  const auto got = launches_since(from);
  ASSERT_EQ(got.size(), count);
  for (const auto& launch : got) {
    EXPECT_EQ(launch.stream, stream.get()) << launch.function;
    EXPECT_TRUE(launch.captured) << launch.function;
  }
}

// Device memory for every operand of a problem, with 16 spare bytes each so that a test
// can pass pointers past the start of an allocation.
struct Operands {
  explicit Operands(const Conv2dDesc& d)
      : desc(d),
        x(bytes(d, d.x_elements())),
        w(bytes(d, d.w_elements())),
        bias(bytes(d, d.k)),
        y(bytes(d, d.y_elements())) {}

  // Each pointer that many bytes past the start of its allocation (bias only when the
  // descriptor has it).
  Conv2dArgs args(unsigned x_offset = 0, unsigned w_offset = 0, unsigned bias_offset = 0, unsigned y_offset = 0) const {
    return Conv2dArgs{.x = x.at(x_offset),
                      .w = w.at(w_offset),
                      .bias = desc.bias ? bias.at(bias_offset) : nullptr,
                      .y = y.at(y_offset)};
  }

  static std::size_t bytes(const Conv2dDesc& d, std::int64_t elements) {
    return static_cast<std::size_t>(elements) * size_of(d.dtype) + 16;
  }

  Conv2dDesc desc;
  FakeBuffer x, w, bias, y;
};

// Runs `call`, which must throw convjit::Error with `code` and every one of `words` in its
// message; returns the message.
template <typename Call>
std::string expect_error(ErrorCode code, Call&& call, const std::vector<std::string>& words = {}) {
  try {
    call();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const std::string& word : words) {
      EXPECT_NE(std::string_view(e.what()).find(word), std::string_view::npos)
          << "'" << word << "' is not in: " << e.what();
    }
    return e.what();
  }
  ADD_FAILURE() << "no convjit::Error was thrown; expected " << to_string(code);
  return {};
}

}  // namespace convjit::testing
