// CUDA graph capture, with the fake driver's rule: while a stream captures, a thread in
// global capture mode that allocates, frees or loads a module gets an error and the
// capture is invalidated. A plan's first run, prepare(), a caller's workspace and
// Runtime::conv2d's first use must all leave a capture valid.
#include <optional>
#include <string>
#include <thread>

#include "support/fake_driver_test.hpp"

namespace convjit {
namespace {

using testing::expect_error;
using testing::FakeBuffer;
using testing::FakeStream;
using testing::Operands;

// The wgmma kernel on the fake's sm_90: a run with `w` needs a workspace for the packed weights.
const Conv2dDesc kWgmma{.n = 1, .c = 16, .h = 8, .w = 8, .k = 32, .r = 3, .s = 3, .bias = true};

class GraphCapture : public testing::FakeDriverTest {};

TEST_F(GraphCapture, FirstRunOnACapturingStreamMakesItsWorkspaceOnceAndLeavesTheCaptureValid) {
  Runtime rt(options());
  FakeStream stream;
  const Conv2dPlan plan = rt.plan(kWgmma, PlanOptions{.stream = stream});
  ASSERT_GT(plan.workspace_bytes(), 0u);
  Operands ops(kWgmma);
  ASSERT_EQ(fake().thread_capture_mode(), CU_STREAM_CAPTURE_MODE_GLOBAL);
  fake().set_capturing(stream.get(), true);

  plan.run(ops.args(), stream);
  EXPECT_EQ(fake().allocations(), 1u);
  expect_capture_valid(stream);
  EXPECT_EQ(fake().thread_capture_mode(), CU_STREAM_CAPTURE_MODE_GLOBAL);
  expect_captured(0, 2, stream);  // pack, then the convolution

  plan.run(ops.args(), stream);  // the stream's workspace is kept
  EXPECT_EQ(fake().allocations(), 1u);
  expect_capture_valid(stream);
  expect_captured(0, 4, stream);

  // A thread in thread-local mode gets its own mode back too.
  FakeStream other;
  fake().set_capturing(other.get(), true);
  fake().set_thread_capture_mode(CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
  plan.run(ops.args(), other);
  EXPECT_EQ(fake().allocations(), 2u);
  EXPECT_EQ(fake().thread_capture_mode(), CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
  expect_capture_valid(other);
}

TEST_F(GraphCapture, RunWithACallerWorkspaceAllocatesNothing) {
  Runtime rt(options());
  FakeStream stream;
  const Conv2dPlan plan = rt.plan(kWgmma, PlanOptions{.stream = stream});
  Operands ops(kWgmma);
  FakeBuffer workspace(plan.workspace_bytes());
  fake().set_capturing(stream.get(), true);

  Conv2dArgs args = ops.args();
  args.workspace = workspace.at();
  args.workspace_bytes = plan.workspace_bytes();
  plan.run(args, stream);
  EXPECT_EQ(fake().calls("cuMemAlloc"), 0u);
  expect_capture_valid(stream);
  expect_captured(0, 2, stream);
  const auto got = fake().launches();
  EXPECT_EQ(got[0].pointer_arg(1), workspace.at());  // packed into the caller's workspace
  EXPECT_EQ(got[1].pointer_arg(1), workspace.at());  // and read from there
}

TEST_F(GraphCapture, TooSmallOrMisalignedCallerWorkspaceIsRefusedWithNothingLaunched) {
  Runtime rt(options());
  FakeStream stream;
  const Conv2dPlan plan = rt.plan(kWgmma, PlanOptions{.stream = stream});
  Operands ops(kWgmma);
  FakeBuffer workspace(plan.workspace_bytes() + 16);
  fake().set_capturing(stream.get(), true);

  Conv2dArgs args = ops.args();
  args.workspace = workspace.at();
  args.workspace_bytes = plan.workspace_bytes() - 1;
  expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(args, stream); },
               {"workspace holds", std::to_string(plan.workspace_bytes())});
  args.workspace = workspace.at(8);
  args.workspace_bytes = plan.workspace_bytes();
  expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(args, stream); }, {"workspace", "16-byte aligned"});
  EXPECT_EQ(launch_count(), 0u);
  EXPECT_EQ(fake().calls("cuMemAlloc"), 0u);
  expect_capture_valid(stream);
}

TEST_F(GraphCapture, PrepareAllocatesWithoutLaunchingSoThatRunsInsideTheCaptureAllocateNothing) {
  Runtime rt(options());
  FakeStream stream;
  const Conv2dPlan plan = rt.plan(kWgmma, PlanOptions{.stream = stream});
  plan.prepare(stream);
  EXPECT_EQ(fake().allocations(), 1u);
  EXPECT_EQ(launch_count(), 0u);

  Operands ops(kWgmma);
  fake().set_capturing(stream.get(), true);
  plan.run(ops.args(), stream);
  EXPECT_EQ(fake().allocations(), 1u);
  expect_capture_valid(stream);
  expect_captured(0, 2, stream);
}

TEST_F(GraphCapture, FirstConv2dOfANewProblemInsideACaptureCompilesLoadsAndLeavesTheCaptureValid) {
  Runtime rt(options());
  FakeStream stream;
  Operands ops(kWgmma);
  fake().set_capturing(stream.get(), true);

  rt.conv2d(kWgmma, ops.args(), stream);
  EXPECT_EQ(rt.stats().compiles, 1u);
  EXPECT_EQ(fake().module_loads(), 1u);
  EXPECT_EQ(fake().allocations(), 1u);
  expect_capture_valid(stream);
  EXPECT_EQ(fake().thread_capture_mode(), CU_STREAM_CAPTURE_MODE_GLOBAL);
  expect_captured(0, 2, stream);
}

// Autotuning times every candidate, which a capture forbids. im2col is kept out of the
// candidates by a workspace limit its columns cannot fit: its cuBLAS handle would need
// the CUDA runtime, which the fake driver cannot serve.
TEST_F(GraphCapture, AutotuningWithoutAStoredChoiceRefusesInsideACaptureAndWorksOnceRunBefore) {
  RuntimeOptions tuned = options();
  tuned.autotune = true;
  tuned.workspace_limit_bytes = 1;
  const Conv2dDesc desc{.n = 1, .c = 16, .h = 8, .w = 8, .k = 16, .r = 3, .s = 3};
  Operands ops(desc);
  FakeStream stream;
  {
    Runtime rt(tuned);
    fake().set_capturing(stream.get(), true);
    expect_error(ErrorCode::kUnsupported, [&] { rt.conv2d(desc, ops.args(), stream); },
                 {"autotuning", "capture is still valid", "Run it once before capturing", "CONVJIT_AUTOTUNE"});
    EXPECT_EQ(launch_count(), 0u);
    expect_capture_valid(stream);

    // The remedy: one run outside the capture tunes and stores the choice...
    fake().set_capturing(stream.get(), false);
    rt.conv2d(desc, ops.args(), stream);
    EXPECT_EQ(rt.stats().autotune_runs, 1u);
  }
  // ...which a later process reads inside a capture, timing nothing.
  Runtime later(tuned);
  fake().reset();
  fake().set_capturing(stream.get(), true);
  later.conv2d(desc, ops.args(), stream);
  EXPECT_EQ(later.stats().autotune_reused, 1u);
  expect_capture_valid(stream);
  expect_captured(0, 1, stream);
}

// A first autotuned call on the null stream from a thread with no current context (a
// fresh thread, or a process that never made one current) asks its capture question in
// the plan's context, as the run does, rather than failing with CUDA_ERROR_INVALID_CONTEXT.
TEST_F(GraphCapture, AutotuningOnTheNullStreamOfAThreadWithNoCurrentContextTimesInThePlansContext) {
  RuntimeOptions tuned = options();
  tuned.autotune = true;
  tuned.workspace_limit_bytes = 1;  // no im2col candidate (see above)
  const Conv2dDesc desc{.n = 1, .c = 16, .h = 8, .w = 8, .k = 16, .r = 3, .s = 3};
  Operands ops(desc);
  Runtime rt(tuned);
  std::optional<Error> error;
  std::thread fresh([&] {
    try {
      rt.conv2d(desc, ops.args(), nullptr);
    } catch (const Error& e) {
      error = e;
    }
  });
  fresh.join();
  EXPECT_FALSE(error) << error->what();
  EXPECT_EQ(rt.stats().autotune_runs, 1u);
}

TEST_F(GraphCapture, AutotunedPlanForACapturingStreamRefusesInsteadOfInvalidatingTheCapture) {
  RuntimeOptions tuned = options();
  tuned.autotune = true;
  tuned.workspace_limit_bytes = 1;  // no im2col candidate (see above)
  const Conv2dDesc desc{.n = 1, .c = 16, .h = 8, .w = 8, .k = 16, .r = 3, .s = 3};
  Runtime rt(tuned);
  FakeStream stream;
  fake().set_capturing(stream.get(), true);
  expect_error(ErrorCode::kUnsupported, [&] { rt.plan(desc, PlanOptions{.stream = stream}); },
               {"autotuning", "capture is still valid"});
  EXPECT_EQ(launch_count(), 0u);
  EXPECT_EQ(fake().calls("cuMemAlloc"), 0u);
  expect_capture_valid(stream);
}

}  // namespace
}  // namespace convjit
