#include "common/json.h"

#include <gtest/gtest.h>

#include <bit>
#include <boost/json/serialize.hpp>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

namespace gantry {
namespace {

std::string Double(double d) {
  std::string out;
  AppendJsonDouble(out, d);
  return out;
}

double ReadBack(const std::string& s) {
  double d = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), d);
  EXPECT_EQ(r.ptr, s.data() + s.size()) << s;
  return d;
}

TEST(JsonTest, DoublesAreWrittenAsPythonWritesThem) {
  const std::pair<double, const char*> cases[] = {
      {0.1, "0.1"},
      {1.0, "1.0"},
      {2.0, "2.0"},
      {-1.0, "-1.0"},
      {1.5, "1.5"},
      {100.0, "100.0"},
      {3.6799999999999995E-4, "0.00036799999999999995"},
      {0.30000000000000004, "0.30000000000000004"},
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {1e15, "1000000000000000.0"},
      {9007199254740992.0, "9007199254740992.0"},
      {1e16, "1e+16"},
      {1.0000000000000002e16, "1.0000000000000002e+16"},
      {123456789012345678.0, "1.2345678901234568e+17"},
      {1e22, "1e+22"},
      {1.5e300, "1.5e+300"},
      {0.001, "0.001"},
      {1e-4, "0.0001"},
      {0.00012345, "0.00012345"},
      {9.999999999999999e-05, "9.999999999999999e-05"},
      {1e-5, "1e-05"},
      {1e-7, "1e-07"},
      {-2.5e-8, "-2.5e-08"},
      {-1.5e-300, "-1.5e-300"},
      {5e-324, "5e-324"},
      {std::numeric_limits<double>::max(), "1.7976931348623157e+308"},
      {std::numeric_limits<double>::min(), "2.2250738585072014e-308"},
  };
  for (const auto& [d, want] : cases) {
    EXPECT_EQ(Double(d), want);
    EXPECT_EQ(std::bit_cast<uint64_t>(ReadBack(Double(d))), std::bit_cast<uint64_t>(d)) << want;
  }
}

// Vectors written by Python (testdata/python_float_repr.txt says how).
TEST(JsonTest, DoublesMatchPythonsReprOnItsOwnVectors) {
  std::ifstream in(GANTRY_SOURCE_DIR "/src/common/testdata/python_float_repr.txt");
  ASSERT_TRUE(in) << "testdata missing";
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string hex, want;
    fields >> hex >> want;
    const double d = std::bit_cast<double>(std::stoull(hex, nullptr, 16));
    EXPECT_EQ(Double(d), want) << hex;
    ++n;
  }
  EXPECT_EQ(n, 1000);
}

TEST(JsonTest, EveryDoubleReadsBackTheSame) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 200'000; ++i) {
    const double d = std::bit_cast<double>(rng());
    if (!std::isfinite(d)) continue;
    const std::string s = Double(d);
    ASSERT_EQ(std::bit_cast<uint64_t>(ReadBack(s)), std::bit_cast<uint64_t>(d)) << s;
    // Either an exponent, or a decimal point with a digit on each side.
    if (s.find('e') == std::string::npos) {
      const size_t dot = s.find('.');
      ASSERT_NE(dot, std::string::npos) << s;
      ASSERT_TRUE(dot > 0 && dot + 1 < s.size() && std::isdigit(s[dot + 1])) << s;
    }
  }
}

TEST(JsonTest, NonFiniteDoublesAreWrittenAsNull) {
  json::array a{std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                std::numeric_limits<double>::quiet_NaN()};
  EXPECT_EQ(ToJson(a), "[null,null,null]");
}

TEST(JsonTest, IntegersAreUnchanged) {
  json::array a{0, -3, INT64_MIN, INT64_MAX, UINT64_MAX, uint64_t{1} << 63};
  EXPECT_EQ(ToJson(a),
            "[0,-3,-9223372036854775808,9223372036854775807,18446744073709551615,"
            "9223372036854775808]");
  EXPECT_EQ(ToJson(*ParseJson(R"({"n":12,"f":12.0,"e":1e3,"x":1.5E0})")),
            R"({"n":12,"f":12.0,"e":1000.0,"x":1.5})");
}

// Everything but doubles is written exactly as Boost.JSON's serializer wrote it before.
TEST(JsonTest, StringsAndStructureAsBoostWritesThem) {
  std::string every_byte;
  for (int c = 0; c < 256; ++c) every_byte.push_back(static_cast<char>(c));
  json::value docs[] = {
      json::value(every_byte),
      json::value("plain"),
      json::value(""),
      json::value("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f \"q\" \\ / \t\n"),
      *ParseJson(R"({"a":[1,-2,true,false,null,{},[]],"b":{"c":{"d":"e\u0001f"}},"":"k"})"),
      *ParseJson("[]"),
      *ParseJson("{}"),
      *ParseJson("null"),
  };
  for (const auto& v : docs) EXPECT_EQ(ToJson(v), json::serialize(v));
  json::object keyed;
  keyed[every_byte] = 1;
  EXPECT_EQ(ToJson(keyed), json::serialize(keyed));
  EXPECT_EQ(JsonQuote(every_byte), json::serialize(json::value(every_byte)));
}

TEST(JsonTest, WhatToJsonWritesParsesBackTheSame) {
  const char* text = R"({"prompt":"h\u00e9llo \"w\"\n","temperature":0.7,"top_p":1,"seed":-5,)"
                     R"("scale":1e-07,"big":1e+300,"list":[0.1,2.0,-0.0,{"x":[null,true]}]})";
  json::value v = *ParseJson(text);
  std::string once = ToJson(v);
  EXPECT_EQ(*ParseJson(once), v);
  EXPECT_EQ(ToJson(*ParseJson(once)), once);
}

TEST(JsonTest, CheckFiniteNamesThePathOfTheValue) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(CheckFinite(*ParseJson(R"({"a":[1,2.5,"x",{"b":null}]})"), "input").ok());
  json::value v = *ParseJson(R"({"a":[1,2,3,1e400]})");
  Status st = CheckFinite(v, "input");
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_EQ(st.message(),
            "input.a[3] is not a finite number: it is too large for a double (1e400 is)");
  json::object o{{"ok", 1}, {"a b", json::array{0.5, json::object{{"c", -inf}}}}};
  EXPECT_EQ(CheckFinite(o, "output").message().substr(0, 46),
            R"(output["a b"][1].c is not a finite number: it )");
  json::object nan{{"x", json::array{1, 2, std::nan("")}}};
  EXPECT_EQ(CheckFinite(nan, "").message(), "x[2] is not a finite number: JSON has no NaN");
  EXPECT_EQ(CheckFinite(json::value(inf), "").message().substr(0, 36),
            "the value is not a finite number: it");
  EXPECT_EQ(CheckFinite(json::array{inf}, "").message().substr(0, 3), "[0]");
  EXPECT_EQ(CheckFinite(json::object{{"1st", inf}}, "cfg").message().substr(0, 12),
            R"(cfg["1st"] i)");
}

// A client's json.dumps writes NaN and Infinity, which JSON does not have: the parse error names
// the value.
TEST(JsonTest, ParseErrorAtNaNOrInfinityNamesTheValue) {
  auto msg = [](std::string_view text) { return ParseJson(text).status().message(); };
  EXPECT_EQ(msg(R"({"input": {"a": [1, 2, 3, NaN]}})"),
            "input.a[3] is not a finite number: JSON has no NaN");
  EXPECT_EQ(msg(R"({"input": {"a": Infinity}})"),
            "input.a is not a finite number: JSON has no Infinity");
  EXPECT_EQ(msg(R"({"input":[{"x":1},{"y":[-Infinity]}]})"),
            "input[1].y[0] is not a finite number: JSON has no Infinity");
  EXPECT_EQ(msg(R"({"in put": {"a\"b": NaN}})"),
            R"(["in put"]["a\"b"] is not a finite number: JSON has no NaN)");
  EXPECT_EQ(msg("NaN"), "the value is not a finite number: JSON has no NaN");
  // Elsewhere a NaN is a plain syntax error.
  EXPECT_EQ(msg(R"({"a": 1, NaN: 2})").substr(0, 15), "malformed JSON:");
  EXPECT_EQ(msg("[1 NaN]").substr(0, 15), "malformed JSON:");
  EXPECT_EQ(msg(R"({"a": nan})").substr(0, 15), "malformed JSON:");
  EXPECT_EQ(msg(R"({"a": [1,)").substr(0, 15), "malformed JSON:");
}

}  // namespace
}  // namespace gantry
