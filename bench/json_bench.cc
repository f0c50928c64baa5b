// ToJson against Boost.JSON's serializer (what ToJson was before it wrote numbers as Python
// does), on what /run re-serializes: a job's input. Not a test; bench/RESULTS.md has figures.
//
//   build/bench/json_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <boost/json/serialize.hpp>
#include <string>

#include "common/json.h"

namespace gantry {
namespace {

// A typical job input, about 1 KB: a prompt, a few sampling parameters, a short list.
const json::value& TypicalInput() {
  static const json::value v = [] {
    std::string prompt;
    while (prompt.size() < 760) {
      prompt += "Summarise the following support ticket in two sentences, \"politely\".\n";
    }
    return *ParseJson(R"({"prompt":)" + JsonQuote(prompt) +
                      R"(,"max_tokens":512,"temperature":0.7,"top_p":0.95,"seed":42,)"
                      R"("stop":["\n\n","###"],"stream":false,"presence_penalty":0.1,)"
                      R"("logit_bias":{"50256":-100},"user":"ticket-bot@example.com",)"
                      R"("images":[{"url":"https://example.com/a.png","scale":1.5}]})");
  }();
  return v;
}

// The worst case for numbers: 128 doubles of every magnitude.
const json::value& ManyDoubles() {
  static const json::value v = [] {
    json::array a;
    double d = 3.6799999999999995e-4;
    for (int i = 0; i < 128; ++i, d *= -7.3) a.emplace_back(d);
    return json::value(std::move(a));
  }();
  return v;
}

void BM_BoostSerialize(benchmark::State& state, const json::value& (*doc)()) {
  const json::value& v = doc();
  for (auto _ : state) benchmark::DoNotOptimize(json::serialize(v));
  state.SetBytesProcessed(state.iterations() * json::serialize(v).size());
}

void BM_ToJson(benchmark::State& state, const json::value& (*doc)()) {
  const json::value& v = doc();
  for (auto _ : state) benchmark::DoNotOptimize(ToJson(v));
  state.SetBytesProcessed(state.iterations() * ToJson(v).size());
}

void BM_CheckFinite(benchmark::State& state, const json::value& (*doc)()) {
  const json::value& v = doc();
  for (auto _ : state) benchmark::DoNotOptimize(CheckFinite(v, "input"));
}

void BM_ParseJson(benchmark::State& state, const json::value& (*doc)()) {
  const std::string text = ToJson(doc());
  for (auto _ : state) benchmark::DoNotOptimize(ParseJson(text));
}

BENCHMARK_CAPTURE(BM_BoostSerialize, typical_input, TypicalInput);
BENCHMARK_CAPTURE(BM_ToJson, typical_input, TypicalInput);
BENCHMARK_CAPTURE(BM_CheckFinite, typical_input, TypicalInput);
BENCHMARK_CAPTURE(BM_ParseJson, typical_input, TypicalInput);
BENCHMARK_CAPTURE(BM_BoostSerialize, many_doubles, ManyDoubles);
BENCHMARK_CAPTURE(BM_ToJson, many_doubles, ManyDoubles);
BENCHMARK_CAPTURE(BM_CheckFinite, many_doubles, ManyDoubles);

}  // namespace
}  // namespace gantry

BENCHMARK_MAIN();
