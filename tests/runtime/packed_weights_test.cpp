// Weights packed once into the wgmma kernel's layout (pack_weights) and given to runs as
// packed_w: the pack kernel runs only when asked, runs with packed weights launch the
// convolution alone on them and need no workspace, and misuse is refused with nothing
// launched.
#include "support/fake_driver_test.hpp"

namespace convjit {
namespace {

using testing::expect_error;
using testing::FakeBuffer;
using testing::Operands;

const Conv2dDesc kWgmma{.n = 1, .c = 16, .h = 8, .w = 8, .k = 32, .r = 3, .s = 3, .bias = true};
const Conv2dDesc kDirect{.n = 1, .c = 3, .h = 8, .w = 8, .k = 4, .r = 3, .s = 3};

class PackedWeights : public testing::FakeDriverTest {};

TEST_F(PackedWeights, PackOnceThenRunsLaunchOnlyTheConvolutionOnThePackedWeights) {
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(kWgmma);
  ASSERT_TRUE(plan.kernel_name().starts_with("conv2d_wgmma_")) << plan.kernel_name();
  ASSERT_GT(plan.packed_weight_bytes(), 0u);
  Operands ops(kWgmma);
  FakeBuffer packed(plan.packed_weight_bytes());

  plan.pack_weights(ops.w.at(), packed.at());
  ASSERT_EQ(launch_count(), 1u);
  const auto pack = fake().launches().front();
  EXPECT_EQ(pack.function, plan.kernel_name() + "_pack");
  ASSERT_EQ(pack.args.size(), 2u);
  EXPECT_EQ(pack.pointer_arg(0), ops.w.at());
  EXPECT_EQ(pack.pointer_arg(1), packed.at());

  Conv2dArgs args = ops.args();
  args.w = nullptr;
  args.packed_w = packed.at();
  for (int run = 0; run < 2; ++run) plan.run(args);
  const auto got = launches_since(1);
  ASSERT_EQ(got.size(), 2u);
  for (const auto& launch : got) {
    EXPECT_EQ(launch.function, plan.kernel_name());
    EXPECT_EQ(launch.pointer_arg(0), ops.x.at());
    EXPECT_EQ(launch.pointer_arg(1), packed.at());
    EXPECT_EQ(launch.pointer_arg(3), ops.y.at());
  }
  EXPECT_EQ(fake().calls("cuMemAlloc"), 0u);  // no workspace: the weights are packed already
}

TEST_F(PackedWeights, APlanLoadsItsKernelAndItsPackKernelWhenMadeNotAtTheirFirstLaunch) {
  // Under lazy loading the driver would load each kernel at its first launch, inside the
  // first call; a plan loads both (cuFuncLoad) when its module is loaded.
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(kWgmma);
  EXPECT_EQ(fake().calls("cuFuncLoad"), 2u);
  EXPECT_EQ(rt.stats().module_loads, 1u);
  Operands ops(kWgmma);
  plan.run(ops.args());
  plan.run(ops.args());
  EXPECT_EQ(launch_count(), 4u);  // pack + convolution, twice
  EXPECT_EQ(fake().calls("cuFuncLoad"), 2u) << "a launch loads nothing more";
  EXPECT_EQ(fake().calls("cuModuleGetFunction"), 2u) << "the pack kernel is looked up once, with the module";
}

TEST_F(PackedWeights, PackedWeightsForAPlanThatReadsWeightsAsTheyAreAreRefused) {
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(kDirect);
  EXPECT_EQ(plan.packed_weight_bytes(), 0u);
  Operands ops(kDirect);
  FakeBuffer packed(4096);
  Conv2dArgs args = ops.args();
  args.packed_w = packed.at();
  expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(args); }, {"packed weights were given", plan.kernel_name()});
  expect_error(ErrorCode::kInvalidArgument, [&] { plan.pack_weights(ops.w.at(), packed.at()); }, {"nothing to pack"});
  EXPECT_EQ(launch_count(), 0u);
}

TEST_F(PackedWeights, PackedWeightsNotSixteenByteAlignedAreRefused) {
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(kWgmma);
  Operands ops(kWgmma);
  FakeBuffer packed(plan.packed_weight_bytes() + 16);
  expect_error(ErrorCode::kInvalidArgument, [&] { plan.pack_weights(ops.w.at(), packed.at(8)); },
               {"packed", "16-byte aligned"});
  Conv2dArgs args = ops.args();
  args.w = nullptr;
  args.packed_w = packed.at(8);
  expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(args); }, {"packed_w = ", "16-byte aligned"});
  EXPECT_EQ(launch_count(), 0u);
  EXPECT_EQ(fake().calls("cuMemAlloc"), 0u);
}

// Split-K (the NHWC wgmma kernel on a small image with deep channels): a run launches the
// convolution on its fp32 partial sums, in the workspace after the packed weights, then
// the reduce pass from them into y; with packed weights the partial sums are all the
// workspace it needs, and less is refused with nothing launched.
TEST_F(PackedWeights, SplitRunsLaunchTheConvolutionIntoPartialSumsThenTheReducePass) {
  // Strict: 3xTF32 packs its planes (TF32 and 16-bit read w through a map on this kernel).
  Conv2dDesc d{.n = 1,
               .c = 256,
               .h = 6,
               .w = 5,
               .k = 40,
               .r = 3,
               .s = 3,
               .pad_h = 1,
               .pad_w = 1,
               .bias = true,
               .layout = Layout::kNHWC};
  d.math = MathMode::kStrictFp32;
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
  const std::string name = plan.kernel_name();
  ASSERT_TRUE(name.starts_with("conv2d_wgmma_")) << name;
  const std::uint64_t packed_bytes = plan.packed_weight_bytes();
  ASSERT_GT(packed_bytes, 0u);
  ASSERT_GT(plan.workspace_bytes(), packed_bytes) << "not split";
  const std::uint64_t partial_bytes = plan.workspace_bytes() - packed_bytes;
  Operands ops(d);
  FakeBuffer workspace(plan.workspace_bytes());
  Conv2dArgs args = ops.args();
  args.workspace = workspace.at();
  args.workspace_bytes = plan.workspace_bytes();
  plan.run(args);
  auto got = launches_since(0);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].function, name + "_pack");
  EXPECT_EQ(got[0].pointer_arg(1), workspace.at());
  EXPECT_EQ(got[1].function, name);
  EXPECT_EQ(got[1].pointer_arg(1), workspace.at());
  EXPECT_EQ(got[1].pointer_arg(3), workspace.at(packed_bytes));  // partial sums, not y
  EXPECT_GT(got[1].grid[2], 1u);                                 // the slices
  EXPECT_EQ(got[2].function, name + "_reduce");
  ASSERT_EQ(got[2].args.size(), 3u);
  EXPECT_EQ(got[2].pointer_arg(0), workspace.at(packed_bytes));
  EXPECT_EQ(got[2].pointer_arg(1), ops.bias.at());
  EXPECT_EQ(got[2].pointer_arg(2), ops.y.at());

  FakeBuffer packed(packed_bytes);
  plan.pack_weights(ops.w.at(), packed.at());
  args.w = nullptr;
  args.packed_w = packed.at();
  args.workspace_bytes = partial_bytes;
  const std::size_t before = launch_count();
  plan.run(args);
  got = launches_since(before);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].function, name);
  EXPECT_EQ(got[0].pointer_arg(1), packed.at());
  EXPECT_EQ(got[0].pointer_arg(3), workspace.at());
  EXPECT_EQ(got[1].function, name + "_reduce");
  EXPECT_EQ(got[1].pointer_arg(0), workspace.at());
  EXPECT_EQ(got[1].pointer_arg(2), ops.y.at());

  args.workspace_bytes = partial_bytes - 4;
  expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(args); }, {"the workspace holds"});
  EXPECT_EQ(launch_count(), before + 2);
}

// 16-bit x at 2 bytes leaves the wgmma kernel for mma.sync, which reads the weights as
// they are: packed weights alone cannot serve it.
TEST_F(PackedWeights, PackedWeightsAloneCannotServeAVariantThatReadsWeightsAsTheyAre) {
  const Conv2dDesc desc{.n = 1, .c = 16, .h = 8, .w = 8, .k = 32, .r = 3, .s = 3, .dtype = DType::kFloat16};
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(desc);
  ASSERT_GT(plan.packed_weight_bytes(), 0u);
  Operands ops(desc);
  FakeBuffer packed(plan.packed_weight_bytes());
  Conv2dArgs args = ops.args(2);
  args.w = nullptr;
  args.packed_w = packed.at();
  expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(args); }, {"give w beside packed_w"});
  EXPECT_EQ(launch_count(), 0u);

  args.w = ops.w.at();  // both given: the variant takes w
  plan.run(args);
  ASSERT_EQ(launch_count(), 1u);
  EXPECT_TRUE(fake().launches().back().function.ends_with("_alignx2"));
  EXPECT_EQ(fake().launches().back().pointer_arg(1), ops.w.at());
}

}  // namespace
}  // namespace convjit
