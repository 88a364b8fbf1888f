// Pointers at every offset a caller may pass, on every kernel family the fake's sm_90
// reaches without cuBLAS: the ones the dtype allows launch exactly the expected kernels
// with the pointers passed through (or the packed workspace for the wgmma kernel's
// weights); the ones it does not, and memory the GPU cannot read, are refused before
// anything is allocated or launched.
#include <fmt/format.h>

#include <ostream>
#include <string>
#include <vector>

#include "support/fake_driver_test.hpp"

namespace convjit {

// GoogleTest names the parameter "f16" instead of its bytes (found by argument-dependent lookup).
[[maybe_unused]] static void PrintTo(DType dtype, std::ostream* os) { *os << to_string(dtype); }

namespace {

using testing::expect_error;
using testing::FakeBuffer;
using testing::FakeLaunch;
using testing::Operands;

// k = 32 reaches the wgmma kernel on sm_90; k = 16 (fewer than 32 channels a group)
// the mma.sync kernels. kAuto resolves both to the implicit GEMM, never to im2col.
Conv2dDesc wide(DType dtype) {
  return {.n = 1, .c = 16, .h = 8, .w = 8, .k = 32, .r = 3, .s = 3, .bias = true, .dtype = dtype};
}
Conv2dDesc narrow(DType dtype) {
  return {.n = 1, .c = 16, .h = 8, .w = 8, .k = 16, .r = 3, .s = 3, .bias = true, .dtype = dtype};
}

unsigned alignment_of(const void* pointer) {
  const auto address = reinterpret_cast<std::uintptr_t>(pointer);
  unsigned align = 16;
  while (align > 1 && address % align != 0) align /= 2;
  return align;
}

const char* const kOperands[] = {"x", "w", "bias", "y"};

Conv2dArgs shifted(const Operands& ops, int operand, unsigned offset) {
  return ops.args(operand == 0 ? offset : 0, operand == 1 ? offset : 0, operand == 2 ? offset : 0,
                  operand == 3 ? offset : 0);
}

// What one accepted run must have launched: the plan's kernel when the pointers give it
// what it needs, else a variant named for the alignment present; a wgmma kernel after
// the pack of w into the plan's workspace, any other kernel alone on the pointers given.
void expect_launches(const Conv2dPlan& plan, const Conv2dArgs& a, const std::vector<FakeLaunch>& got) {
  ASSERT_FALSE(got.empty());
  const FakeLaunch& main = got.back();
  const AlignmentNeeds need = plan.alignment();
  const bool primary = alignment_of(a.x) >= need.x && alignment_of(a.w) >= need.w &&
                       alignment_of(a.bias) >= need.bias && alignment_of(a.y) >= need.y;
  if (primary) {
    EXPECT_EQ(main.function, plan.kernel_name());
  } else {
    EXPECT_NE(main.function, plan.kernel_name());
    EXPECT_NE(main.function.find("_align"), std::string::npos) << main.function;
  }
  const bool packs = main.function.starts_with("conv2d_wgmma_");
  ASSERT_EQ(got.size(), packs ? 2u : 1u) << main.function;
  ASSERT_EQ(main.args.size(), 4u) << main.function;
  EXPECT_EQ(main.pointer_arg(0), a.x);
  EXPECT_EQ(main.pointer_arg(2), a.bias);
  EXPECT_EQ(main.pointer_arg(3), a.y);
  if (packs) {
    const FakeLaunch& pack = got.front();
    EXPECT_EQ(pack.function, main.function + "_pack");
    ASSERT_EQ(pack.args.size(), 2u);
    EXPECT_EQ(pack.pointer_arg(0), a.w);
    EXPECT_EQ(main.pointer_arg(1), pack.pointer_arg(1)) << "the kernel must read the weights just packed";
    EXPECT_GE(alignment_of(main.pointer_arg(1)), 16u);
  } else {
    EXPECT_EQ(main.pointer_arg(1), a.w);
  }
}

class PointerAlignment : public testing::FakeDriverTest, public ::testing::WithParamInterface<DType> {};

TEST_P(PointerAlignment, OffsetsTheDtypeAllowsLaunchTheRightKernelOthersLaunchAndAllocateNothing) {
  const DType dtype = GetParam();
  const auto element = static_cast<unsigned>(size_of(dtype));
  Runtime rt(options());
  std::size_t refused = 0;
  std::size_t variants = 0;
  for (const Conv2dDesc& desc : {wide(dtype), narrow(dtype)}) {
    Operands ops(desc);
    for (Algorithm algorithm : {Algorithm::kDirect, Algorithm::kImplicitGemm, Algorithm::kAuto}) {
      const Conv2dPlan plan = rt.plan(desc, PlanOptions{.algorithm = algorithm});
      ASSERT_NE(plan.algorithm(), Algorithm::kIm2colGemm);  // the fake cannot serve cuBLAS
      // Refused offsets first, while the plan has no workspace: a refusal must not make one.
      for (int operand = 0; operand < 4; ++operand) {
        for (unsigned offset : {1u, 2u, 0u, 4u, 8u, 12u}) {
          SCOPED_TRACE(
              fmt::format("{} {}: {} at +{}", desc.to_string(), to_string(algorithm), kOperands[operand], offset));
          const Conv2dArgs a = shifted(ops, operand, offset);
          const std::size_t launches = launch_count();
          const auto allocations = fake().calls("cuMemAlloc");
          if (offset % element != 0) {
            expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(a); },
                         {std::string(kOperands[operand]) + " = ", fmt::format("not {}-byte aligned", element),
                          "nothing was launched"});
            EXPECT_EQ(launch_count(), launches);
            EXPECT_EQ(fake().calls("cuMemAlloc"), allocations);
            ++refused;
            continue;
          }
          plan.run(a);
          const auto got = launches_since(launches);
          expect_launches(plan, a, got);
          if (!got.empty() && got.back().function != plan.kernel_name()) ++variants;
        }
      }
    }
  }
  // Not vacuous: both paths were taken.
  EXPECT_GT(refused, 0u);
  EXPECT_GT(variants, 0u);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, PointerAlignment,
                         ::testing::Values(DType::kFloat32, DType::kFloat16, DType::kBFloat16),
                         [](const auto& info) { return std::string(to_string(info.param)); });

class PointerChecks : public testing::FakeDriverTest {};

TEST_F(PointerChecks, HostOrFreedMemoryIsRefusedNamingTheOperandWithNothingLaunched) {
  const Conv2dDesc desc = narrow(DType::kFloat32);
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(desc, PlanOptions{.algorithm = Algorithm::kDirect});
  Operands ops(desc);
  std::vector<float> host(static_cast<std::size_t>(desc.x_elements() + desc.y_elements()));
  void* freed = nullptr;
  {
    FakeBuffer gone(host.size() * sizeof(float));
    freed = gone.at();
  }
  for (void* outside : {static_cast<void*>(host.data()), freed}) {
    for (int operand = 0; operand < 4; ++operand) {
      SCOPED_TRACE(kOperands[operand]);
      Conv2dArgs a = ops.args();
      switch (operand) {
        case 0:
          a.x = outside;
          break;
        case 1:
          a.w = outside;
          break;
        case 2:
          a.bias = outside;
          break;
        default:
          a.y = outside;
          break;
      }
      expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(a); },
                   {std::string(kOperands[operand]) + " = ", "not memory the GPU can read"});
    }
  }
  EXPECT_EQ(launch_count(), 0u);
  plan.run(ops.args());  // the same plan with device pointers: one launch
  EXPECT_EQ(launch_count(), 1u);
}

TEST_F(PointerChecks, PlanReportsWhatItsFastestKernelNeedsOfEachPointer) {
  Runtime rt(options());
  for (const Conv2dDesc& desc :
       {wide(DType::kFloat32), narrow(DType::kFloat32), wide(DType::kFloat16), narrow(DType::kFloat16)}) {
    SCOPED_TRACE(desc.to_string());
    const Conv2dPlan plan = rt.plan(desc, PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    const KernelInfo info = rt.inspect(desc, "sm_90", PlanOptions{.algorithm = Algorithm::kImplicitGemm});
    EXPECT_EQ(plan.kernel_name(), info.kernel_name);
    EXPECT_EQ(plan.alignment(), info.alignment);
  }
}

TEST_F(PointerChecks, HalfMmaSyncWeightsAtTwoOrFourBytesRunAVariantBuiltForThemOthersTheFastKernel) {
  const Conv2dDesc desc = narrow(DType::kFloat16);
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(desc);
  ASSERT_TRUE(plan.kernel_name().starts_with("conv2d_igemm_f16_")) << plan.kernel_name();
  EXPECT_EQ(plan.alignment().w, 16u);  // 16-byte copies of W rows
  Operands ops(desc);
  for (unsigned offset : {2u, 4u}) {
    const std::size_t before = launch_count();
    plan.run(ops.args(0, offset));
    const auto got = launches_since(before);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].function, plan.kernel_name() + fmt::format("_alignw{}", offset));
    EXPECT_EQ(got[0].pointer_arg(1), ops.w.at(offset));
  }
  plan.run(ops.args());
  EXPECT_EQ(fake().launches().back().function, plan.kernel_name());
  EXPECT_EQ(plan.alignment().w, 16u);  // variants never change what the plan reports
}

TEST_F(PointerChecks, Tf32MmaSyncWeightsAtFourBytesRunAVariantBuiltForThem) {
  const Conv2dDesc desc = narrow(DType::kFloat32);
  Runtime rt(options());
  const Conv2dPlan plan = rt.plan(desc);
  ASSERT_TRUE(plan.kernel_name().starts_with("conv2d_igemm_tf32_")) << plan.kernel_name();
  EXPECT_EQ(plan.alignment(), (AlignmentNeeds{4, 16, 4, 4}));
  Operands ops(desc);
  plan.run(ops.args(0, 4));
  ASSERT_EQ(launch_count(), 1u);
  EXPECT_EQ(fake().launches().back().function, plan.kernel_name() + "_alignw4");
  EXPECT_EQ(fake().launches().back().pointer_arg(1), ops.w.at(4));
}

TEST_F(PointerChecks, SixteenBitInputAtTwoBytesMovesAWgmmaProblemToMmaSync) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    const Conv2dDesc desc = wide(dtype);
    SCOPED_TRACE(desc.to_string());
    Runtime rt(options());
    const Conv2dPlan plan = rt.plan(desc);
    ASSERT_TRUE(plan.kernel_name().starts_with("conv2d_wgmma_")) << plan.kernel_name();
    EXPECT_EQ(plan.alignment().x, 4u);  // pixel pairs
    Operands ops(desc);
    const std::size_t before = launch_count();
    plan.run(ops.args(2));
    const auto got = launches_since(before);
    ASSERT_EQ(got.size(), 1u);  // no weight pack: mma.sync reads w as it is
    EXPECT_TRUE(got[0].function.starts_with(fmt::format("conv2d_igemm_{}_", to_string(dtype)))) << got[0].function;
    EXPECT_TRUE(got[0].function.ends_with("_alignx2")) << got[0].function;
    EXPECT_EQ(got[0].pointer_arg(0), ops.x.at(2));
    EXPECT_EQ(got[0].pointer_arg(1), ops.w.at());
  }
}

}  // namespace
}  // namespace convjit
