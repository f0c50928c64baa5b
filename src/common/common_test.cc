#include <gtest/gtest.h>
#include <unistd.h>

#include "common/env.h"
#include "common/json.h"
#include "common/procfs.h"
#include "common/status.h"

namespace gantry {

TEST(StatusTest, ResultHoldsValueOrError) {
  Result<int> ok = 5;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 5);
  Result<int> bad = NotFound("x");
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kNotFound);
  EXPECT_EQ(bad.status().ToString(), "not_found: x");
}

TEST(EnvTest, IdsAreUniqueAndShaped) {
  std::string a = NewId("j"), b = NewId("j");
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), 22u);
  EXPECT_EQ(a.substr(0, 2), "j-");
  EXPECT_EQ(NewSecret("gk_").size(), 43u);
}

TEST(EnvTest, Sha256KnownVector) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
}

TEST(EnvTest, FakeClockMovesOnlyWhenTold) {
  FakeClock c(1000);
  EXPECT_EQ(c.NowMs(), 1000);
  c.Advance(60'000);
  EXPECT_EQ(c.NowMs(), 61'000);
}

TEST(JsonTest, ParseErrorsAreValues) {
  EXPECT_FALSE(ParseJson("{bad").ok());
  auto v = ParseJson(R"({"a": 3.0, "b": "x\"y"})");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*AsInt(*Find(v->as_object(), "a")), 3);
  EXPECT_EQ(Find(v->as_object(), "zz"), nullptr);
  EXPECT_EQ(JsonQuote("x\"y"), R"("x\"y")");
  EXPECT_FALSE(AsInt(json::value(2.5)).has_value());
}

TEST(ProcfsTest, ReadsItsOwnStatAndNothingForAMissingProcess) {
  auto self = ReadProcStat(getpid());
  ASSERT_TRUE(self.has_value());
  EXPECT_EQ(self->state, 'R');
  EXPECT_EQ(self->ppid, getppid());
  EXPECT_EQ(self->pgrp, getpgrp());
  EXPECT_EQ(ProcState(getpid()), 'R');
  EXPECT_FALSE(ReadProcStat(0x3fffffff).has_value());
  EXPECT_EQ(ProcState(0x3fffffff), 0);
}

}  // namespace gantry
