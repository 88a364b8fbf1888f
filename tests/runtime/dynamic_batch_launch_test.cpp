// Dynamic batch on the launch path, on the fake driver: one plan of a batch=dynamic
// descriptor runs every batch from 1 to its n with one compile, each launch passing the
// run's batch as the kernel's last argument with the grid the kernel specialized for
// that batch gets; a batch out of range, or another batch given to a static plan, is
// refused naming Conv2dArgs.n with nothing launched or allocated.
#include <fmt/format.h>

#include <string>
#include <vector>

#include "support/fake_driver_test.hpp"

namespace convjit {
namespace {

using testing::expect_error;
using testing::FakeLaunch;
using testing::Operands;

struct Family {
  const char* name;
  Algorithm algorithm;
  Conv2dDesc desc;  // n: the largest batch
};

// Every kernel family the fake's sm_90 reaches without cuBLAS: wgmma (k >= 32) in both
// layouts and NHWC split-K, mma.sync (NHWC, k < 32), direct, depthwise.
std::vector<Family> families() {
  const Conv2dDesc dense{
      .n = 16, .c = 16, .h = 8, .w = 8, .k = 32, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};
  Conv2dDesc nhwc = dense;
  nhwc.layout = Layout::kNHWC;
  nhwc.dtype = DType::kFloat16;
  Conv2dDesc narrow = nhwc;
  narrow.k = 24;
  // A few tiles over a deep reduction: split into the same slices at every batch.
  const Conv2dDesc deep{.n = 16,
                        .c = 512,
                        .h = 4,
                        .w = 4,
                        .k = 128,
                        .r = 3,
                        .s = 3,
                        .pad_h = 1,
                        .pad_w = 1,
                        .bias = true,
                        .layout = Layout::kNHWC};
  const Conv2dDesc depthwise{
      .n = 16, .c = 16, .h = 8, .w = 8, .k = 16, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .groups = 16};
  return {{"direct", Algorithm::kDirect, dense},
          {"wgmma", Algorithm::kImplicitGemm, dense},
          {"wgmma_nhwc_f16", Algorithm::kImplicitGemm, nhwc},
          {"wgmma_nhwc_split_k", Algorithm::kImplicitGemm, deep},
          {"mma_nhwc_f16", Algorithm::kImplicitGemm, narrow},
          {"depthwise", Algorithm::kDirect, depthwise}};
}

// A split-K run ends with its reduce pass (partial, bias, y[, batch]); the convolution
// is the launch before it.
bool split(const std::vector<FakeLaunch>& launches) { return launches.back().function.ends_with("_reduce"); }
const FakeLaunch& convolution(const std::vector<FakeLaunch>& launches) {
  return launches[launches.size() - (split(launches) ? 2 : 1)];
}

class DynamicBatchLaunch : public testing::FakeDriverTest {};

TEST_F(DynamicBatchLaunch, OnePlanRunsEveryBatchWithOneCompileAndTheStaticKernelsGridForThatBatch) {
  Runtime rt(options());
  for (const Family& f : families()) {
    SCOPED_TRACE(f.name);
    Conv2dDesc dyn = f.desc;
    dyn.dynamic_batch = true;
    const auto compiles = rt.stats().compiles;
    const Conv2dPlan plan = rt.plan(dyn, PlanOptions{.algorithm = f.algorithm});
    Operands ops(dyn);  // sized for the largest batch
    for (int batch : {1, 3, 16, 0}) {
      SCOPED_TRACE(fmt::format("batch {}", batch));
      Conv2dArgs a = ops.args();
      a.n = batch;
      const std::size_t before = launch_count();
      plan.run(a);
      const auto got = launches_since(before);
      ASSERT_FALSE(got.empty());
      const FakeLaunch& main = convolution(got);
      EXPECT_EQ(main.function, plan.kernel_name());
      // The TMA variant of the NHWC wgmma kernel takes x's im2col map after y, and w's
      // tiled map after it where it reads w unpacked.
      const bool tma = main.function.ends_with("_tma");
      const std::size_t map = tma ? (plan.packed_weight_bytes() == 0 ? 2 : 1) : 0;
      ASSERT_EQ(main.args.size(), 5u + map) << "x, w, bias, y, (the maps) and the batch";
      EXPECT_EQ(static_cast<int>(main.args[4 + map]), batch == 0 ? dyn.n : batch);
      EXPECT_EQ(main.pointer_arg(0), a.x);
      EXPECT_EQ(split(got) ? got.back().pointer_arg(2) : main.pointer_arg(3), a.y);
      EXPECT_EQ(split(got), f.name == std::string_view("wgmma_nhwc_split_k")) << got.back().function;
      if (split(got)) {
        ASSERT_EQ(got.back().args.size(), 4u) << "partial, bias, y and the batch";
        EXPECT_EQ(static_cast<int>(got.back().args[3]), batch == 0 ? dyn.n : batch);
      }

      // The kernel specialized for this batch, and its launch for the same pointers.
      Conv2dDesc fixed = f.desc;
      fixed.n = batch == 0 ? f.desc.n : batch;
      const Conv2dPlan reference = rt.plan(fixed, PlanOptions{.algorithm = f.algorithm});
      const std::size_t mark = launch_count();
      reference.run(ops.args());
      const auto want = launches_since(mark);
      ASSERT_FALSE(want.empty());
      ASSERT_EQ(split(want), split(got));
      const FakeLaunch& static_main = convolution(want);
      EXPECT_EQ(static_main.args.size(), 4u + map) << "a static kernel takes no batch";
      if (split(want)) EXPECT_EQ(want.back().args.size(), 3u) << "nor does its reduce pass";
      // A static batch of few pixels may take tiles of half the pixels (and so its own
      // stages and grid); elsewhere the same launch.
      const auto blocks_of = [&](const Conv2dDesc& d) {
        const std::string tile = rt.inspect(d, std::nullopt, PlanOptions{.algorithm = f.algorithm}).tile;
        return tile.find("2 m64 blocks") != std::string::npos   ? 2
               : tile.find("1 m64 blocks") != std::string::npos ? 1
                                                                : 0;
      };
      const bool half_tiles = blocks_of(fixed) == 1 && blocks_of(dyn) == 2;
      EXPECT_EQ(main.block[0], static_main.block[0]);
      if (half_tiles) continue;
      for (int i = 0; i < 3; ++i) EXPECT_EQ(main.grid[i], static_main.grid[i]) << "grid dimension " << i;
      EXPECT_EQ(main.shared_bytes, static_main.shared_bytes);
    }
    // One compile for the dynamic plan, whatever the batches; the static references
    // compiled one each for 1, 3 and 16.
    EXPECT_EQ(rt.stats().compiles - compiles, 4u);
  }
}

TEST_F(DynamicBatchLaunch, ABatchOutOfRangeOrAnotherBatchForAStaticPlanIsRefusedWithNothingLaunched) {
  Runtime rt(options());
  const Family f = families()[0];  // direct: the cheapest compile
  Conv2dDesc dyn = f.desc;
  dyn.dynamic_batch = true;
  Operands ops(dyn);
  const Conv2dPlan dynamic_plan = rt.plan(dyn, PlanOptions{.algorithm = f.algorithm});
  const Conv2dPlan static_plan = rt.plan(f.desc, PlanOptions{.algorithm = f.algorithm});
  const auto refuse = [&](const Conv2dPlan& plan, int batch, const std::string& expected) {
    SCOPED_TRACE(fmt::format("{} batch {}", plan.desc().to_string(), batch));
    Conv2dArgs a = ops.args();
    a.n = batch;
    const std::size_t launches = launch_count();
    const auto allocations = fake().calls("cuMemAlloc");
    expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(a); },
                 {"Conv2dArgs.n", expected, fmt::format("got {}", batch), "nothing was launched"});
    EXPECT_EQ(launch_count(), launches);
    EXPECT_EQ(fake().calls("cuMemAlloc"), allocations);
  };
  refuse(dynamic_plan, 17, "a batch from 1 to 16");
  refuse(dynamic_plan, -1, "a batch from 1 to 16");
  refuse(static_plan, 3, "0 or 16");
  refuse(static_plan, 17, "0 or 16");
  // The static plan's own batch is accepted spelled out.
  Conv2dArgs own = ops.args();
  own.n = 16;
  const std::size_t before = launch_count();
  static_plan.run(own);
  EXPECT_EQ(launch_count(), before + 1);
}

}  // namespace
}  // namespace convjit
