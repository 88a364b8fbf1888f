#include "compile/ptxas_report.hpp"

#include <gtest/gtest.h>

namespace convjit {
namespace {

TEST(PtxasReport, ReadsRegistersSharedStackAndSpillsOfTheNamedKernel) {
  const char* log =
      "ptxas info    : 0 bytes gmem\n"
      "ptxas info    : Compiling entry function 'other' for 'sm_90'\n"
      "ptxas info    : Function properties for other\n"
      "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
      "ptxas info    : Used 40 registers, used 0 barriers\n"
      "ptxas info    : Compiling entry function 'conv' for 'sm_90'\n"
      "ptxas info    : Function properties for conv\n"
      "ptxas         .     16 bytes stack frame, 12 bytes spill stores, 20 bytes spill loads\n"
      "ptxas info    : Used 168 registers, used 1 barriers, 49152 bytes smem, 400 bytes cmem[0]\n";
  const auto usage = parse_ptxas_report(log, "conv");
  EXPECT_EQ(usage.registers, 168);
  EXPECT_EQ(usage.static_shared_bytes, 49152);
  EXPECT_EQ(usage.stack_bytes, 16);
  EXPECT_EQ(usage.spill_store_bytes, 12);
  EXPECT_EQ(usage.spill_load_bytes, 20);
}

TEST(PtxasReport, AnEntryWhoseNameExtendsTheKernelsIsNotTakenForIt) {
  // A module's second pass (<name>_reduce) reported before the kernel itself.
  const char* log =
      "ptxas info    : Compiling entry function 'conv_reduce' for 'sm_90a'\n"
      "ptxas info    : Function properties for conv_reduce\n"
      "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
      "ptxas info    : Used 32 registers, used 0 barriers\n"
      "ptxas info    : Compiling entry function 'conv' for 'sm_90a'\n"
      "ptxas info    : Function properties for conv\n"
      "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
      "ptxas info    : Used 168 registers, used 1 barriers\n";
  EXPECT_EQ(parse_ptxas_report(log, "conv").registers, 168);
  EXPECT_EQ(parse_ptxas_report(log, "conv_reduce").registers, 32);
}

TEST(PtxasReport, AKernelWhoseNameStartsAnotherIsNotTakenForIt) {
  // A transposed implicit-GEMM module: <name>_pack is reported before <name>.
  const char* log =
      "ptxas info    : Compiling entry function 'conv_pack' for 'sm_90'\n"
      "ptxas info    : Function properties for conv_pack\n"
      "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
      "ptxas info    : Used 32 registers, used 0 barriers\n"
      "ptxas info    : Compiling entry function 'conv' for 'sm_90'\n"
      "ptxas info    : Function properties for conv\n"
      "ptxas         .     0 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads\n"
      "ptxas info    : Used 255 registers, used 1 barriers\n";
  const auto usage = parse_ptxas_report(log, "conv");
  EXPECT_EQ(usage.registers, 255);
  EXPECT_EQ(usage.spill_store_bytes, 8);
  EXPECT_EQ(parse_ptxas_report(log, "conv_pack").registers, 32);
}

TEST(PtxasReport, EmptyLogGivesZeros) {
  const auto usage = parse_ptxas_report("", "conv");
  EXPECT_EQ(usage.registers, 0);
  EXPECT_EQ(usage.static_shared_bytes, 0);
}

}  // namespace
}  // namespace convjit
