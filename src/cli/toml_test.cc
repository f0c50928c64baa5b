#include "cli/toml.h"

#include <gtest/gtest.h>

namespace gantry::cli {
namespace {

TEST(TomlTest, EndpointSpecSubset) {
  auto t = ParseToml(R"(# an endpoint
id = "echo"
workersMax = 2   # at most
cpu = 0.5
flashboot = true
gpuTypeIds = ["H100", 'A100-80GB',
              "cpu"]
[worker]
command = ["python3", "handler.py"]
[worker.env]
GREETING = "hi \"there\""
)");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(
      ToJson(*t),
      R"({"id":"echo","workersMax":2,"cpu":5E-1,"flashboot":true,"gpuTypeIds":["H100","A100-80GB","cpu"],"worker":{"command":["python3","handler.py"],"env":{"GREETING":"hi \"there\""}}})");
}

TEST(TomlTest, ErrorsNameTheLine) {
  auto t = ParseToml("id = \"a\"\nworkersMax = \n");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("line 2"), std::string::npos) << t.status().message();
  EXPECT_FALSE(ParseToml("a = 1\na = 2\n").ok());
  EXPECT_FALSE(ParseToml("x = {a = 1}\n").ok());
  EXPECT_FALSE(ParseToml("x = \"open\n").ok());
  EXPECT_FALSE(ParseToml("x = 1 y\n").ok());
}

}  // namespace
}  // namespace gantry::cli
