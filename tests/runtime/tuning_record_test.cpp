#include "runtime/tuning_record.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "support/temp_dir.hpp"

namespace convjit {
namespace {

TEST(TuningRecords, StoredChoiceIsReadBackForTheSameKeyOnly) {
  testing::TempDir dir;
  TuningRecords records(dir.path());
  EXPECT_FALSE(records.load("n1c8h8w8k8r3s3 arch=sm_90"));
  records.store("n1c8h8w8k8r3s3 arch=sm_90", Algorithm::kIm2colGemm, "direct=1.0ms im2col_gemm=0.5ms");
  EXPECT_EQ(records.load("n1c8h8w8k8r3s3 arch=sm_90"), Algorithm::kIm2colGemm);
  EXPECT_FALSE(records.load("n1c8h8w8k8r3s3 arch=sm_80"));
}

TEST(TuningRecords, DamagedOrForeignRecordIsIgnored) {
  testing::TempDir dir;
  TuningRecords records(dir.path());
  const std::string key = "n2c16h9w9k32r3s3 arch=sm_90";
  records.store(key, Algorithm::kImplicitGemm, "implicit_gemm=0.1ms");
  const auto path = records.path_for(key);
  std::string text;
  {
    std::ifstream in(path);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  // One flipped letter in the choice: the checksum no longer matches.
  std::string damaged = text;
  damaged.replace(damaged.find("implicit_gemm"), 8, "directXX");
  std::ofstream(path, std::ios::trunc) << damaged;
  EXPECT_FALSE(records.load(key));
  // A record for another key copied under this key's name.
  std::ofstream(path, std::ios::trunc) << "convjit-tuning 1\nkey other\nchoice direct\ntimes x\nsha256 00\n";
  EXPECT_FALSE(records.load(key));
}

}  // namespace
}  // namespace convjit
