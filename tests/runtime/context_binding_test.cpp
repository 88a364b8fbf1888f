// Plans and contexts on the fake driver: a plan refuses a stream of another context,
// Runtime::conv2d follows the stream into it (loading the kernel there, compiling nothing
// more), and everything convjit made in a context is gone before it lets the context go.
#include <optional>

#include "support/fake_driver_test.hpp"

namespace convjit {
namespace {

using testing::expect_error;
using testing::FakeStream;
using testing::Operands;

const Conv2dDesc kWgmma{.n = 1, .c = 16, .h = 8, .w = 8, .k = 32, .r = 3, .s = 3, .bias = true};

// A context made with cuCtxCreate, destroyed with the object.
class CreatedContext {
 public:
  CreatedContext() : context_(testing::fake_driver().create_context()) {}
  ~CreatedContext() { testing::fake_driver().destroy_context(context_); }
  CreatedContext(const CreatedContext&) = delete;
  CreatedContext& operator=(const CreatedContext&) = delete;
  CUcontext get() const { return context_; }

 private:
  CUcontext context_;
};

class ContextBinding : public testing::FakeDriverTest {};

TEST_F(ContextBinding, PlanRefusesAStreamOfAnotherContextAndConv2dFollowsItThere) {
  CreatedContext second;
  {
    Runtime rt(options());
    const Conv2dPlan plan = rt.plan(kWgmma);  // the primary context
    Operands ops(kWgmma);
    FakeStream foreign(second.get());

    expect_error(ErrorCode::kInvalidArgument, [&] { plan.run(ops.args(), foreign); },
                 {"this plan is bound to", "nothing was launched"});
    EXPECT_EQ(launch_count(), 0u);
    EXPECT_EQ(fake().calls("cuMemAlloc"), 0u);

    // Runtime::conv2d picks the plan by the stream's context: the kernel compiled for the
    // primary context's sm_90 is loaded into the second one, not compiled again.
    const auto loads = fake().module_loads();
    rt.conv2d(kWgmma, ops.args(), foreign);
    EXPECT_EQ(rt.stats().compiles, 1u);
    EXPECT_EQ(fake().module_loads(), loads + 1);
    const auto got = fake().launches();
    ASSERT_EQ(got.size(), 2u);
    for (const auto& launch : got) {
      EXPECT_EQ(launch.context, second.get());
      EXPECT_EQ(launch.stream, foreign.get());
    }
  }
  // Runtime gone: its modules and workspaces in both contexts went first.
  EXPECT_EQ(fake().live_modules(), 0u);
  EXPECT_EQ(fake().destroyed_with_context(), 0u);
}

TEST_F(ContextBinding, EverythingIsFreedBeforeThePrimaryContextIsReleasedEvenWhenAPlanOutlivesItsRuntime) {
  const std::size_t allocations = fake().live_allocations();
  const int references = fake().primary_context_references();
  std::optional<Conv2dPlan> kept;
  {
    Operands ops(kWgmma);
    {
      Runtime rt(options());
      kept = rt.plan(kWgmma);
      kept->run(ops.args());  // makes the plan's workspace for the null stream
      FakeStream stream;
      rt.conv2d(kWgmma, ops.args(), stream);
      EXPECT_GT(fake().live_modules(), 0u);
    }
    // The plan outlives its Runtime: it still runs, and still holds the context.
    kept->run(ops.args());
    EXPECT_GT(fake().primary_context_references(), references);
  }
  kept.reset();
  EXPECT_EQ(fake().live_modules(), 0u);
  EXPECT_EQ(fake().live_allocations(), allocations);
  EXPECT_EQ(fake().primary_context_references(), references);
  EXPECT_EQ(fake().destroyed_with_context(), 0u) << "an allocation or module outlived its context";
}

}  // namespace
}  // namespace convjit
