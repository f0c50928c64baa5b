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
      R"({"id":"echo","workersMax":2,"cpu":0.5,"flashboot":true,"gpuTypeIds":["H100","A100-80GB","cpu"],"worker":{"command":["python3","handler.py"],"env":{"GREETING":"hi \"there\""}}})");
}

TEST(TomlTest, ErrorsNameTheLine) {
  auto t = ParseToml("id = \"a\"\nworkersMax = \n");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("line 2"), std::string::npos) << t.status().message();
  EXPECT_FALSE(ParseToml("a = 1\na = 2\n").ok());
  EXPECT_FALSE(ParseToml("x = \"open\n").ok());
  EXPECT_FALSE(ParseToml("x = 1 y\n").ok());
}

TEST(TomlTest, ErrorsNameLineAndColumn) {
  auto t = ParseToml("id = \"a\"\n\n[worker]\ncommand = [\"python3\" \"handler.py\"]\n");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(t.status().message().rfind("gantry.toml line 4, column 22: ", 0), 0u)
      << t.status().message();
}

TEST(TomlTest, InlineTables) {
  auto t = ParseToml(R"(worker = {command = ["python3", "h.py"], env = {A = "1", B = "2"}})");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(ToJson(*t), R"({"worker":{"command":["python3","h.py"],"env":{"A":"1","B":"2"}}})");
}

TEST(TomlTest, ArraysOfTables) {
  auto t = ParseToml(R"(
[[volumes]]
name = "models"
path = "/models"

[[volumes]]
name = "cache"
readOnly = false
)");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(
      ToJson(*t),
      R"({"volumes":[{"name":"models","path":"/models"},{"name":"cache","readOnly":false}]})");
}

TEST(TomlTest, DottedKeysAndQuotedKeys) {
  auto t = ParseToml("worker.env.A = \"1\"\n\"odd key\" = 1\n");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(ToJson(*t), R"({"worker":{"env":{"A":"1"}},"odd key":1})");
}

// TOML's four kinds of date and time become RFC 3339 strings.
TEST(TomlTest, DatesAndTimesBecomeRfc3339Strings) {
  auto t = ParseToml(R"(
utc = 1979-05-27T07:32:00Z
offset = 1979-05-27T00:32:00.999999-07:00
space = 1979-05-27 07:32:00+05:30
local = 1979-05-27T07:32:00
day = 1979-05-27
time = 00:32:00.500
)");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(ToJson(*t),
            R"({"utc":"1979-05-27T07:32:00Z","offset":"1979-05-27T00:32:00.999999-07:00",)"
            R"("space":"1979-05-27T07:32:00+05:30","local":"1979-05-27T07:32:00",)"
            R"("day":"1979-05-27","time":"00:32:00.5"})");
}

TEST(TomlTest, NumbersStringsAndBooleans) {
  auto t = ParseToml(R"(
big = 1_000_000
hex = 0xff
neg = -3
exp = 1e3
multi = """
two
lines"""
literal = 'C:\path'
no = false
)");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(ToJson(*t), R"({"big":1000000,"hex":255,"neg":-3,"exp":1000.0,"multi":"two\nlines",)"
                        R"("literal":"C:\\path","no":false})");
}

TEST(TomlTest, InfAndNanHaveNoJsonForm) {
  auto t = ParseToml("ok = 1\nx = inf\n");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), "gantry.toml line 2, column 5: JSON has no inf or nan");
  EXPECT_FALSE(ParseToml("x = nan\n").ok());
}

}  // namespace
}  // namespace gantry::cli
