#include "http/router.h"

#include <gtest/gtest.h>

namespace gantry::http {
namespace {

class RouterTest : public ::testing::Test {
 protected:
  int Add(std::string_view method, std::string_view pattern) {
    auto id = router_.Add(method, pattern);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : -1;
  }
  Router router_;
};

TEST_F(RouterTest, MatchesLiteralsAndParameters) {
  int run = Add("POST", "/v2/{endpoint}/run");
  int status = Add("GET", "/v2/{endpoint}/status/{job}");
  int health = Add("GET", "/healthz");
  auto m = router_.Find("POST", "/v2/ep-1/run");
  EXPECT_EQ(m.id, run);
  EXPECT_EQ(m.param("endpoint"), "ep-1");
  EXPECT_EQ(m.param("job"), "");
  m = router_.Find("GET", "/v2/ep/status/j-1");
  EXPECT_EQ(m.id, status);
  EXPECT_EQ(m.params,
            (std::vector<std::pair<std::string, std::string>>{{"endpoint", "ep"}, {"job", "j-1"}}));
  EXPECT_EQ(router_.Find("GET", "/healthz").id, health);
  EXPECT_EQ(router_.Find("GET", "/v2/ep/status").id, -1);          // too short
  EXPECT_EQ(router_.Find("GET", "/v2/ep/status/j/extra").id, -1);  // too long
  EXPECT_EQ(router_.Find("GET", "/v3/ep/status/j").id, -1);        // another literal
  EXPECT_EQ(router_.Find("GET", "/").id, -1);
}

TEST_F(RouterTest, EmptySegmentsAreIgnoredAndParametersDecoded) {
  int run = Add("POST", "/v2/{endpoint}/run");
  EXPECT_EQ(router_.Find("POST", "/v2/ep//run/").id, run);
  auto m = router_.Find("POST", "//v2/a%20b/run");
  EXPECT_EQ(m.id, run);
  EXPECT_EQ(m.param("endpoint"), "a b");
  EXPECT_EQ(router_.Find("POST", "/v2/ep/r%75n").id, run);  // an encoded literal
}

TEST_F(RouterTest, ALiteralWinsOverAParameterAndFallsBackToIt) {
  int missing = Add("POST", "/v1/blobs/missing");
  int put = Add("PUT", "/v1/blobs/{digest}");
  int get = Add("GET", "/v1/blobs/{digest}");
  EXPECT_EQ(router_.Find("POST", "/v1/blobs/missing").id, missing);
  EXPECT_EQ(router_.Find("PUT", "/v1/blobs/abc").id, put);
  // The literal's branch has no PUT: the parameter's branch takes "missing" as a digest.
  auto m = router_.Find("PUT", "/v1/blobs/missing");
  EXPECT_EQ(m.id, put);
  EXPECT_EQ(m.param("digest"), "missing");
  EXPECT_EQ(router_.Find("GET", "/v1/blobs/x").id, get);
}

TEST_F(RouterTest, AnotherMethodOnAKnownPathIsReported) {
  Add("GET", "/v1/endpoints");
  Add("POST", "/v1/endpoints");
  auto m = router_.Find("DELETE", "/v1/endpoints");
  EXPECT_EQ(m.id, -1);
  EXPECT_TRUE(m.path_matched);
  m = router_.Find("DELETE", "/v1/nothing");
  EXPECT_FALSE(m.path_matched);
}

TEST_F(RouterTest, ParameterNamesMayDifferBetweenRoutesAtOnePosition) {
  int get = Add("GET", "/v1/endpoints/{id}");
  int workers = Add("GET", "/v1/endpoints/{endpoint}/workers");
  EXPECT_EQ(router_.Find("GET", "/v1/endpoints/e").param("id"), "e");
  auto m = router_.Find("GET", "/v1/endpoints/e/workers");
  EXPECT_EQ(m.id, workers);
  EXPECT_EQ(m.param("endpoint"), "e");
  EXPECT_EQ(m.param("id"), "");
  EXPECT_NE(get, workers);
}

TEST_F(RouterTest, RefusesMalformedAndDuplicatePatterns) {
  EXPECT_EQ(router_.Add("GET", "v2/x").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(router_.Add("GET", "/v2/{}").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(router_.Add("GET", "/v2/{ep").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(router_.Add("GET", "/v2/x{ep}").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(router_.Add("GET", "/v2/{a}/{a}").status().code(), Code::kInvalidArgument);
  Add("GET", "/v2/{ep}/health");
  EXPECT_EQ(router_.Add("GET", "/v2/{other}/health").status().code(), Code::kAlreadyExists);
  EXPECT_TRUE(router_.Add("POST", "/v2/{other}/health").ok());
}

}  // namespace
}  // namespace gantry::http
