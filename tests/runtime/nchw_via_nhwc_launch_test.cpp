// NCHW through the NHWC TMA wgmma kernel (CONVJIT_NCHW_VIA_NHWC=1) on the launch path, on
// the fake driver: a run launches the x transpose, the pack and the convolution, which
// stores the caller's NCHW y itself; with split-K, the convolution's partial sums and the
// reduce, which stores the caller's NCHW y; in that order and nothing else, with the
// caller's x read only by the first and the caller's y written only by the last; the
// map encodes the workspace's copy of x. A caller's workspace, packed
// weights and a capturing stream work as they do for the plain kernels.
#include <latch>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/fake_driver_test.hpp"
#include "support/scoped_env.hpp"

namespace convjit {
namespace {

using testing::expect_error;
using testing::FakeBuffer;
using testing::FakeLaunch;
using testing::FakeStream;
using testing::Operands;
using testing::ScopedEnv;

Conv2dDesc with_dtype(Conv2dDesc d, DType dtype) {
  d.dtype = dtype;
  return d;
}

// One tile, no split.
const Conv2dDesc kPlain =
    with_dtype({.n = 2, .c = 64, .h = 10, .w = 12, .k = 64, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true},
               DType::kFloat16);
// Deep channels on a small image: the NHWC kernel splits the reduction.
const Conv2dDesc kSplit{
    .n = 1, .c = 256, .h = 6, .w = 5, .k = 40, .r = 3, .s = 3, .pad_h = 1, .pad_w = 1, .bias = true};

// The regions' alignment in the workspace (kRegionAlign, specialized_source.hpp).
constexpr std::uint64_t kRegion = 256;
std::uint64_t round_up(std::uint64_t bytes) { return (bytes + kRegion - 1) / kRegion * kRegion; }

class NchwViaNhwcLaunch : public testing::FakeDriverTest {
 protected:
  Conv2dPlan plan_for(Runtime& rt, const Conv2dDesc& d, Stream stream = nullptr) {
    return rt.plan(d, PlanOptions{.algorithm = Algorithm::kImplicitGemm, .stream = stream});
  }
  // A run's arguments over `workspace`, all of the plan's size.
  static Conv2dArgs with_workspace(Conv2dArgs args, const FakeBuffer& workspace, const Conv2dPlan& plan) {
    args.workspace = workspace.at();
    args.workspace_bytes = plan.workspace_bytes();
    return args;
  }
  // Where a run puts x's NHWC copy: past the packed weights (absent when the run has
  // packed ones), rounded up to kRegion; split-K's partial sums follow it.
  struct Regions {
    const void* x;
    const void* partial;  // split-K
  };
  static Regions regions(const Conv2dDesc& d, const void* workspace, std::uint64_t packed_bytes) {
    const auto base = reinterpret_cast<std::uintptr_t>(workspace) + round_up(packed_bytes);
    const auto e = static_cast<std::uint64_t>(size_of(d.dtype));
    const std::uint64_t x_bytes = round_up(static_cast<std::uint64_t>(d.x_elements()) * e);
    return {reinterpret_cast<const void*>(base), reinterpret_cast<const void*>(base + x_bytes)};
  }
  // The launches of one run, checked in order: x transpose, [pack], convolution, [reduce].
  void expect_run(const std::vector<FakeLaunch>& got, const std::string& name, const Operands& ops,
                  const Conv2dArgs& args, const Regions& at, const void* packed, bool pack, bool split) const {
    ASSERT_EQ(got.size(), 2u + (pack ? 1 : 0) + (split ? 1 : 0));
    std::size_t i = 0;
    EXPECT_EQ(got[i].function, name + "_x_to_nhwc");
    ASSERT_EQ(got[i].args.size(), 2u);
    EXPECT_EQ(got[i].pointer_arg(0), args.x);
    EXPECT_EQ(got[i].pointer_arg(1), at.x);
    ++i;
    if (pack) {
      EXPECT_EQ(got[i].function, name + "_pack");
      EXPECT_EQ(got[i].pointer_arg(0), ops.w.at());
      EXPECT_EQ(got[i].pointer_arg(1), packed);
      ++i;
    }
    EXPECT_EQ(got[i].function, name);
    ASSERT_EQ(got[i].args.size(), 5u);  // x, packed, bias, y (or the partial sums), the map
    EXPECT_EQ(got[i].pointer_arg(0), at.x) << "the convolution reads x's NHWC copy";
    EXPECT_EQ(got[i].pointer_arg(1), packed);
    EXPECT_EQ(got[i].pointer_arg(2), args.bias);
    EXPECT_EQ(got[i].pointer_arg(3), split ? at.partial : args.y) << "unsplit, the convolution stores NCHW y";
    EXPECT_EQ(got[i].pointer_arg(4), at.x) << "the fake's map starts with its address";
    ++i;
    if (split) {
      EXPECT_EQ(got[i].function, name + "_reduce");
      ASSERT_EQ(got[i].args.size(), 3u);
      EXPECT_EQ(got[i].pointer_arg(0), at.partial);
      EXPECT_EQ(got[i].pointer_arg(1), args.bias);
      EXPECT_EQ(got[i].pointer_arg(2), args.y) << "only the last launch writes the caller's y";
    }
  }

  ScopedEnv on_{"CONVJIT_NCHW_VIA_NHWC", "1"};
};

TEST_F(NchwViaNhwcLaunch, ARunLaunchesXTransposePackAndAConvolutionThatStoresTheCallersY) {
  Runtime rt(options());
  const Conv2dPlan plan = plan_for(rt, kPlain);
  const std::string name = plan.kernel_name();
  ASSERT_TRUE(name.ends_with("_via_nhwc")) << name;
  EXPECT_EQ(fake().calls("cuFuncLoad"), 3u) << "the convolution, the pack and x's transpose, with the module";
  const std::uint64_t packed_bytes = plan.packed_weight_bytes();
  ASSERT_GT(packed_bytes, 0u);
  const Regions bounds = regions(kPlain, nullptr, packed_bytes);
  EXPECT_EQ(plan.workspace_bytes(), reinterpret_cast<std::uintptr_t>(bounds.partial)) << "x's region, no more";
  Operands ops(kPlain);
  FakeBuffer workspace(plan.workspace_bytes());
  Conv2dArgs args = with_workspace(ops.args(), workspace, plan);
  plan.run(args);
  expect_run(fake().launches(), name, ops, args, regions(kPlain, workspace.at(), packed_bytes), workspace.at(),
             /*pack=*/true, /*split=*/false);
  const auto encodes = fake().im2col_encodes();
  ASSERT_EQ(encodes.size(), 1u);
  EXPECT_EQ(encodes[0].address, regions(kPlain, workspace.at(), packed_bytes).x);
  EXPECT_EQ(encodes[0].dims, (std::vector<std::uint64_t>{64, 12, 10, 2}));
  EXPECT_EQ(fake().calls("cuMemAlloc"), 0u);

  // x and y at element offsets: x's transpose copies elements and the convolution stores
  // y's one at a time, so the same kernel runs.
  const std::size_t before = launch_count();
  args = with_workspace(ops.args(/*x_offset=*/2, 0, /*bias_offset=*/2, /*y_offset=*/6), workspace, plan);
  plan.run(args);
  expect_run(launches_since(before), name, ops, args, regions(kPlain, workspace.at(), packed_bytes), workspace.at(),
             /*pack=*/true, /*split=*/false);

  args.workspace_bytes = plan.workspace_bytes() - 1;
  expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(args); }, {"the workspace holds"});
  EXPECT_EQ(launch_count(), before + 3);
}

TEST_F(NchwViaNhwcLaunch, ASplitRunsReducePassStoresTheCallersYLast) {
  Runtime rt(options());
  const Conv2dPlan plan = plan_for(rt, kSplit);
  const std::string name = plan.kernel_name();
  ASSERT_TRUE(name.ends_with("_via_nhwc")) << name;
  const std::uint64_t packed_bytes = plan.packed_weight_bytes();
  ASSERT_GT(plan.workspace_bytes(), reinterpret_cast<std::uintptr_t>(regions(kSplit, nullptr, packed_bytes).partial))
      << "not split";
  Operands ops(kSplit);
  FakeBuffer workspace(plan.workspace_bytes());
  Conv2dArgs args = with_workspace(ops.args(), workspace, plan);
  plan.run(args);
  const auto got = fake().launches();
  expect_run(got, name, ops, args, regions(kSplit, workspace.at(), packed_bytes), workspace.at(), /*pack=*/true,
             /*split=*/true);
  EXPECT_GT(got[2].grid[2], 1u);  // the slices
}

TEST_F(NchwViaNhwcLaunch, PackedWeightsLeaveTheRegionAndPartialsAtTheWorkspacesStart) {
  Runtime rt(options());
  const Conv2dPlan plan = plan_for(rt, kSplit);
  const std::string name = plan.kernel_name();
  const std::uint64_t packed_bytes = plan.packed_weight_bytes();
  // What the public header promises a run with packed weights needs.
  const std::uint64_t run_bytes = plan.workspace_bytes() - packed_bytes;
  Operands ops(kSplit);
  FakeBuffer packed(packed_bytes);
  plan.pack_weights(ops.w.at(), packed.at());
  ASSERT_EQ(launch_count(), 1u);
  EXPECT_EQ(fake().launches()[0].function, name + "_pack");

  FakeBuffer workspace(run_bytes);
  Conv2dArgs args = ops.args();
  args.w = nullptr;
  args.packed_w = packed.at();
  args.workspace = workspace.at();
  args.workspace_bytes = run_bytes;
  plan.run(args);
  expect_run(launches_since(1), name, ops, args, regions(kSplit, workspace.at(), 0), packed.at(), /*pack=*/false,
             /*split=*/true);

  args.workspace_bytes = run_bytes - 4;
  expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(args); }, {"the workspace holds"});
  EXPECT_EQ(launch_count(), 4u);
}

TEST_F(NchwViaNhwcLaunch, AFirstRunOnACapturingStreamMakesItsWorkspaceOnceAndCapturesEveryStep) {
  Runtime rt(options());
  FakeStream stream;
  const Conv2dPlan plan = plan_for(rt, kPlain, stream);
  Operands ops(kPlain);
  fake().set_capturing(stream.get(), true);
  plan.run(ops.args(), stream);
  plan.run(ops.args(), stream);
  EXPECT_EQ(fake().allocations(), 1u);
  expect_capture_valid(stream);
  ASSERT_NO_FATAL_FAILURE(expect_captured(0, 6, stream));
  const auto got = fake().launches();
  EXPECT_EQ(got[0].function, plan.kernel_name() + "_x_to_nhwc");
  EXPECT_EQ(got[2].function, plan.kernel_name());
  EXPECT_EQ(got[2].pointer_arg(3), ops.y.at());
}

// A 3-D NCDHW problem (stride-1 transposed, through its forward twin; two tiles, so
// split-K): x's transpose, the pack, the convolution, which reads a rank-5 map of x's
// NDHWC copy (C, W, H, D, N), and the reduce, which stores the caller's NCDHW y.
TEST_F(NchwViaNhwcLaunch, AThreeDimensionalRunReadsARankFiveMapOfXsNdhwcCopy) {
  const Conv2dDesc d = with_dtype({.n = 2,
                                   .c = 32,
                                   .h = 6,
                                   .w = 8,
                                   .k = 48,
                                   .r = 3,
                                   .s = 3,
                                   .pad_h = 1,
                                   .pad_w = 1,
                                   .spatial_dims = 3,
                                   .d = 5,
                                   .t = 3,
                                   .pad_d = 1,
                                   .transposed = true},
                                  DType::kFloat16);
  Runtime rt(options());
  const Conv2dPlan plan = plan_for(rt, d);
  const std::string name = plan.kernel_name();
  ASSERT_TRUE(name.ends_with("_via_nhwc")) << name;
  Operands ops(d);
  FakeBuffer workspace(plan.workspace_bytes());
  Conv2dArgs args = with_workspace(ops.args(), workspace, plan);
  plan.run(args);
  const std::uint64_t packed_bytes = plan.packed_weight_bytes();
  expect_run(fake().launches(), name, ops, args, regions(d, workspace.at(), packed_bytes), workspace.at(),
             /*pack=*/true, /*split=*/true);
  const auto encodes = fake().im2col_encodes();
  ASSERT_EQ(encodes.size(), 1u);
  EXPECT_EQ(encodes[0].rank, 5u);
  EXPECT_EQ(encodes[0].dims, (std::vector<std::uint64_t>{32, 8, 6, 5, 2}));
  EXPECT_EQ(encodes[0].lower, (std::vector<int>{-1, -1, -1})) << "the twin's padding: 3 - 1 - 1 a dimension";
  EXPECT_EQ(encodes[0].upper, (std::vector<int>{-1, -1, -1}));
  EXPECT_EQ(encodes[0].address, regions(d, workspace.at(), packed_bytes).x);
}

// A strided transposed problem with one receiving phase (stride 2, dilation 2, 1-D): x's
// transpose, the bias fill of the caller's y, the pack, then the convolution, which stores
// the phase's outputs into the caller's y (long enough not to split).
TEST_F(NchwViaNhwcLaunch, AStridedTransposedPhaseFillsYWithTheBiasBeforeTheConvolutionStoresItsPhase) {
  const Conv2dDesc d = with_dtype({.n = 4,
                                   .c = 32,
                                   .w = 16384,
                                   .k = 64,
                                   .s = 3,
                                   .stride_w = 2,
                                   .pad_w = 1,
                                   .dilation_w = 2,
                                   .bias = true,
                                   .spatial_dims = 1,
                                   .transposed = true},
                                  DType::kFloat16);
  Runtime rt(options());
  const Conv2dPlan plan = plan_for(rt, d);
  const std::string name = plan.kernel_name();
  ASSERT_TRUE(name.ends_with("_via_nhwc")) << name;
  Operands ops(d);
  FakeBuffer workspace(plan.workspace_bytes());
  Conv2dArgs args = with_workspace(ops.args(), workspace, plan);
  plan.run(args);
  const auto got = fake().launches();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].function, name + "_x_to_nhwc");
  EXPECT_EQ(got[1].function, name + "_fill");
  ASSERT_EQ(got[1].args.size(), 2u);
  EXPECT_EQ(got[1].pointer_arg(0), args.bias);
  EXPECT_EQ(got[1].pointer_arg(1), args.y);
  EXPECT_EQ(got[2].function, name + "_pack");
  EXPECT_EQ(got[3].function, name);
  EXPECT_EQ(got[3].pointer_arg(3), args.y) << "the phase's outputs go straight into the caller's y";
}

TEST_F(NchwViaNhwcLaunch, OffTheSameProblemRunsTheNchwKernelAlone) {
  ScopedEnv off("CONVJIT_NCHW_VIA_NHWC", "0");
  Runtime rt(options());
  const Conv2dPlan plan = plan_for(rt, kPlain);
  EXPECT_FALSE(plan.kernel_name().ends_with("_via_nhwc")) << plan.kernel_name();
  EXPECT_EQ(plan.workspace_bytes(), plan.packed_weight_bytes());
  Operands ops(kPlain);
  plan.run(ops.args());
  const auto got = fake().launches();
  ASSERT_EQ(got.size(), 2u);  // pack, convolution
  EXPECT_EQ(got[1].function, plan.kernel_name());
  EXPECT_EQ(got[1].pointer_arg(0), ops.x.at());
  EXPECT_EQ(got[1].pointer_arg(3), ops.y.at());
  EXPECT_TRUE(fake().im2col_encodes().empty());
}

// Host threads sharing a plan: a run is several launches over the plan's workspace (x's
// transpose into it, the pack, the convolution reading the copy), and threads enqueuing on
// one stream at once must not interleave them, or a convolution reads another thread's x
// (what RuntimeGpu.ManyThreadsCallingAtOnceAllGetCorrectResults caught on the GPU). On the
// null stream, shared by every thread, each convolution follows its own thread's
// transpose; under CU_STREAM_PER_THREAD, a different stream on each thread, whose runs may
// overlap on the device, each thread has a workspace of its own. The threads start together.
TEST_F(NchwViaNhwcLaunch, ThreadsSharingAPlanEnqueueEachRunWholeAndPerThreadStreamsHaveTheirOwnWorkspace) {
  Runtime rt(options());
  const Conv2dPlan plan = plan_for(rt, kPlain);
  const std::string name = plan.kernel_name();
  constexpr int kThreads = 6;
  constexpr int kRuns = 40;
  std::vector<std::unique_ptr<Operands>> ops;
  std::map<const void*, int> thread_of_x, thread_of_y;
  for (int t = 0; t < kThreads; ++t) {
    ops.push_back(std::make_unique<Operands>(kPlain));
    thread_of_x[ops.back()->x.at()] = t;
    thread_of_y[ops.back()->y.at()] = t;
  }
  for (const Stream stream : {Stream{nullptr}, reinterpret_cast<Stream>(CU_STREAM_PER_THREAD)}) {
    SCOPED_TRACE(stream == nullptr ? "the null stream" : "CU_STREAM_PER_THREAD");
    const std::size_t from = launch_count();
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        start.arrive_and_wait();
        for (int i = 0; i < kRuns; ++i) plan.run(ops[t]->args(), stream);
      });
    }
    for (auto& thread : threads) thread.join();
    const auto got = launches_since(from);
    ASSERT_EQ(got.size(), std::size_t{kThreads} * kRuns * 3) << "x's transpose, the pack, the convolution";
    std::map<int, std::set<const void*>> workspace_of;  // each thread's transposes' targets
    std::map<const void*, int> transposed;              // a workspace: whose x it last held
    int interleaved = 0;
    for (const FakeLaunch& launch : got) {
      if (launch.function == name + "_x_to_nhwc") {
        const int t = thread_of_x.at(launch.pointer_arg(0));
        workspace_of[t].insert(launch.pointer_arg(1));
        transposed[launch.pointer_arg(1)] = t;
      } else if (launch.function == name) {
        // The convolution reads the copy at its x and stores the caller's NCHW y.
        interleaved += transposed.at(launch.pointer_arg(0)) != thread_of_y.at(launch.pointer_arg(3)) ? 1 : 0;
      }
    }
    EXPECT_EQ(interleaved, 0) << "convolutions read another thread's transposed x";
    std::set<const void*> distinct;
    for (const auto& [t, workspaces] : workspace_of) {
      EXPECT_EQ(workspaces.size(), 1u) << "thread " << t;
      distinct.insert(workspaces.begin(), workspaces.end());
    }
    EXPECT_EQ(distinct.size(), stream == nullptr ? 1u : std::size_t{kThreads});
  }
}

}  // namespace
}  // namespace convjit
