// NCHW stems through the NHWC mma.sync kernel (nchw_mma_takes_route, by default) on the
// launch path, on the fake driver: a run launches x's transpose into the workspace and
// then the convolution, which reads that copy and the caller's weights and stores the
// caller's NCHW y; nothing else, no pack. Tensors at element offsets run the same kernel;
// a capturing stream gets its workspace once and every step captured.
#include <string>
#include <vector>

#include "support/fake_driver_test.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

using testing::FakeBuffer;
using testing::FakeLaunch;
using testing::FakeStream;
using testing::Operands;
using testing::ScopedEnv;

// A 3-channel 3x3 stem: its 24 x 99 outputs an image are four times x's 3 x 99 and more.
const Conv2dDesc kStem{.n = 2,
                       .c = 3,
                       .h = 9,
                       .w = 11,
                       .k = 24,
                       .r = 3,
                       .s = 3,
                       .pad_h = 1,
                       .pad_w = 1,
                       .bias = true,
                       .dtype = DType::kFloat16};

// The regions' alignment in the workspace (kRegionAlign, specialized_source.hpp).
constexpr std::uint64_t kRegion = 256;

class NchwViaNhwcMmaLaunch : public testing::FakeDriverTest {
 protected:
  Conv2dPlan plan_for(Runtime& rt, Stream stream = nullptr) {
    return rt.plan(kStem, PlanOptions{.algorithm = Algorithm::kImplicitGemm, .stream = stream});
  }
  // x's transpose from the caller's x into the workspace's start, then the convolution on
  // that copy, the caller's w and bias, into the caller's y.
  static void expect_run(const std::vector<FakeLaunch>& got, const std::string& name, const Conv2dArgs& args,
                         const void* workspace) {
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].function, name + "_x_to_nhwc");
    ASSERT_EQ(got[0].args.size(), 2u);
    EXPECT_EQ(got[0].pointer_arg(0), args.x);
    EXPECT_EQ(got[0].pointer_arg(1), workspace);
    EXPECT_EQ(got[1].function, name);
    EXPECT_EQ(got[1].pointer_arg(0), workspace) << "the convolution reads x's NHWC copy";
    EXPECT_EQ(got[1].pointer_arg(1), args.w) << "and the caller's NCHW weights, unpacked";
    EXPECT_EQ(got[1].pointer_arg(2), args.bias);
    EXPECT_EQ(got[1].pointer_arg(3), args.y) << "it stores the caller's NCHW y itself";
  }

  ScopedEnv unset_{"CONVJIT_NCHW_MMA_VIA_NHWC", nullptr};
};

TEST_F(NchwViaNhwcMmaLaunch, ARunLaunchesXsTransposeThenAConvolutionThatReadsItsCopyAndStoresTheCallersY) {
  Runtime rt(options());
  const Conv2dPlan plan = plan_for(rt);
  const std::string name = plan.kernel_name();
  ASSERT_TRUE(name.starts_with("conv2d_igemm_") && name.ends_with("_via_nhwc")) << name;
  EXPECT_EQ(plan.packed_weight_bytes(), 0u);
  const auto x_bytes = static_cast<std::uint64_t>(kStem.x_elements()) * size_of(kStem.dtype);
  EXPECT_EQ(plan.workspace_bytes(), (x_bytes + kRegion - 1) / kRegion * kRegion) << "x's region, no more";
  Operands ops(kStem);
  FakeBuffer workspace(plan.workspace_bytes());
  Conv2dArgs args = ops.args();
  args.workspace = workspace.at();
  args.workspace_bytes = plan.workspace_bytes();
  plan.run(args);
  expect_run(fake().launches(), name, args, workspace.at());
  EXPECT_EQ(fake().calls("cuMemAlloc"), 0u);

  // Every tensor an element past its allocation: the transpose and the kernel copy
  // elements of the caller's tensors, so the same kernel runs.
  const std::size_t before = launch_count();
  Conv2dArgs shifted = ops.args(/*x_offset=*/2, /*w_offset=*/2, /*bias_offset=*/2, /*y_offset=*/2);
  shifted.workspace = workspace.at();
  shifted.workspace_bytes = plan.workspace_bytes();
  plan.run(shifted);
  expect_run(launches_since(before), name, shifted, workspace.at());
}

TEST_F(NchwViaNhwcMmaLaunch, AFirstRunOnACapturingStreamMakesItsWorkspaceOnceAndCapturesBothSteps) {
  Runtime rt(options());
  FakeStream stream;
  const Conv2dPlan plan = plan_for(rt, stream);
  Operands ops(kStem);
  fake().set_capturing(stream.get(), true);
  plan.run(ops.args(), stream);
  plan.run(ops.args(), stream);
  EXPECT_EQ(fake().allocations(), 1u);
  expect_capture_valid(stream);
  ASSERT_NO_FATAL_FAILURE(expect_captured(0, 4, stream));
  const auto got = fake().launches();
  EXPECT_EQ(got[0].function, plan.kernel_name() + "_x_to_nhwc");
  EXPECT_EQ(got[1].function, plan.kernel_name());
  EXPECT_EQ(got[1].pointer_arg(0), got[0].pointer_arg(1)) << "the convolution reads what the transpose wrote";
  EXPECT_EQ(got[1].pointer_arg(3), ops.y.at());
}

}  // namespace
}  // namespace convjit
