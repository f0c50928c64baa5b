// gantry run and gantry status against a fake server: submitting, following a job's stream,
// what goes to stdout and to stderr, and the exit codes.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cli/cli_test_util.h"

namespace gantry::cli {
namespace {

class JobsTest : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    server_.On("POST", "/v2/echo/run", 200, R"({"id": "j-1", "status": "IN_QUEUE"})");
  }
  // The method and target of every request, in order.
  std::vector<std::string> Targets() {
    std::vector<std::string> out;
    for (const auto& r : server_.Requests()) out.push_back(r.method + " " + r.target);
    return out;
  }
  void Stream(const std::string& status, const std::string& chunks = "") {
    server_.On("GET", "/v2/echo/stream/j-1", 200,
               R"({"status": ")" + status + R"(", "stream": [)" + chunks + "]}");
  }
  void JobStatus(const std::string& body) { server_.On("GET", "/v2/echo/status/j-1", 200, body); }
};

TEST_F(JobsTest, AsyncPrintsTheJobIdAlone) {
  EXPECT_EQ(Run({"run", "echo", "--input", R"({"a": 1})", "--async"}), 0) << err_;
  EXPECT_EQ(out_, "j-1\n");
  EXPECT_EQ(err_, "");
  http::Request r = OnlyRequest();
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/v2/echo/run");
  EXPECT_EQ(r.body, R"({"input":{"a":1}})");
}

TEST_F(JobsTest, AsyncWithJsonPrintsTheReply) {
  EXPECT_EQ(Run({"run", "echo", "--input", "{}", "--async", "--json"}), 0) << err_;
  EXPECT_EQ(out_, "{\"id\":\"j-1\",\"status\":\"IN_QUEUE\"}\n");
}

TEST_F(JobsTest, RunSubmitsFollowsAndPrintsTheOutput) {
  Stream("IN_PROGRESS");
  server_.Then("GET", "/v2/echo/stream/j-1", 200, R"({"status": "COMPLETED", "stream": []})");
  JobStatus(R"({"id": "j-1", "status": "COMPLETED", "output": {"b": 2}})");
  EXPECT_EQ(Run({"run", "echo", "--input", R"({"a": 1})"}), 0) << err_;
  EXPECT_EQ(out_, "{\"b\":2}\n");
  EXPECT_EQ(err_, "");
  EXPECT_EQ(Targets(),
            (std::vector<std::string>{"POST /v2/echo/run", "GET /v2/echo/stream/j-1",
                                      "GET /v2/echo/stream/j-1", "GET /v2/echo/status/j-1"}));
  // A poll that brought nothing at once waits a little before the next.
  EXPECT_EQ(slept_ms_, 100);
}

TEST_F(JobsTest, AStringOutputIsPrintedBare) {
  Stream("COMPLETED");
  JobStatus(R"({"id": "j-1", "status": "COMPLETED", "output": "hello\nworld"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "1"}), 0) << err_;
  EXPECT_EQ(out_, "hello\nworld\n");
}

TEST_F(JobsTest, StreamChunksArePrintedAsTheyComeAndNotTheAggregate) {
  Stream("IN_PROGRESS", R"({"output": {"chunk": 0}})");
  server_.Then("GET", "/v2/echo/stream/j-1", 200, R"({"status": "IN_PROGRESS", "stream": []})");
  server_.Then("GET", "/v2/echo/stream/j-1", 200,
               R"({"status": "COMPLETED", "stream": [{"output": {"chunk": 1}},
                                                      {"output": "two"}]})");
  JobStatus(R"({"id": "j-1", "status": "COMPLETED", "output": [{"chunk": 0}, {"chunk": 1}]})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}"}), 0) << err_;
  EXPECT_EQ(out_, "{\"chunk\":0}\n{\"chunk\":1}\n\"two\"\n");
  EXPECT_EQ(err_, "");
}

TEST_F(JobsTest, AFailedJobPrintsATracebackAsText) {
  Stream("FAILED");
  // What RunPod's worker library sends for an exception: a JSON string holding JSON.
  JobStatus(
      R"({"id": "j-1", "status": "FAILED", "error": "{\"error_type\": \"<class 'ValueError'>\", \"error_message\": \"bad thing\", \"error_traceback\": \"Traceback (most recent call last):\\n  File \\\"h.py\\\", line 3, in handler\\nValueError: bad thing\\n\"}"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}"}), 1);
  EXPECT_EQ(out_, "");
  EXPECT_EQ(err_,
            "gantry: job j-1 is FAILED:\n"
            "Traceback (most recent call last):\n"
            "  File \"h.py\", line 3, in handler\n"
            "ValueError: bad thing\n");
}

TEST_F(JobsTest, AStringErrorIsPrintedItselfWithItsNewlines) {
  Stream("FAILED");
  JobStatus(R"({"id": "j-1", "status": "FAILED", "error": "boom"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}"}), 1);
  EXPECT_EQ(err_, "gantry: job j-1 is FAILED: boom\n");
  JobStatus(R"({"id": "j-1", "status": "FAILED", "error": "line one\nline two\n"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}"}), 1);
  EXPECT_EQ(err_, "gantry: job j-1 is FAILED:\nline one\nline two\n");
  // A JSON string without RunPod's fields is the string itself.
  JobStatus(R"({"id": "j-1", "status": "FAILED", "error": "{\"a\": 1}"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}"}), 1);
  EXPECT_EQ(err_, "gantry: job j-1 is FAILED: {\"a\": 1}\n");
}

TEST_F(JobsTest, AnObjectErrorIsPrintedAsJson) {
  Stream("FAILED");
  JobStatus(R"({"id": "j-1", "status": "FAILED", "error": {"code": 7, "why": ["x"]}})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}"}), 1);
  EXPECT_EQ(err_, "gantry: job j-1 is FAILED: {\"code\":7,\"why\":[\"x\"]}\n");
}

TEST_F(JobsTest, TimedOutAndCancelledJobsExit1) {
  Stream("TIMED_OUT");
  JobStatus(R"({"id": "j-1", "status": "TIMED_OUT", "error": "execution timeout"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}"}), 1);
  EXPECT_EQ(err_, "gantry: job j-1 is TIMED_OUT: execution timeout\n");
  Stream("CANCELLED");
  JobStatus(R"({"id": "j-1", "status": "CANCELLED"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}"}), 1);
  EXPECT_EQ(err_, "gantry: job j-1 is CANCELLED\n");
  EXPECT_EQ(out_, "");
}

TEST_F(JobsTest, WithJsonAFinishedJobsStatusIsPrinted) {
  Stream("FAILED");
  JobStatus(R"({"id": "j-1", "status": "FAILED", "error": "boom"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}", "--json"}), 1);
  EXPECT_EQ(out_, "{\"id\":\"j-1\",\"status\":\"FAILED\",\"error\":\"boom\"}\n");
  EXPECT_EQ(err_, "gantry: job j-1 is FAILED: boom\n");
}

TEST_F(JobsTest, AJobNotDoneWithinTheWaitExits4) {
  Stream("IN_PROGRESS");
  JobStatus(R"({"id": "j-1", "status": "IN_PROGRESS"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}", "--wait", "500"}), 4);
  EXPECT_EQ(out_, "");
  EXPECT_EQ(err_,
            "gantry: job j-1 is IN_PROGRESS after 500 ms\n"
            "hint: see it later with: gantry status echo j-1\n");
  EXPECT_EQ(slept_ms_, 500);
}

TEST_F(JobsTest, AnUnplaceableEndpointIsReportedAfterASecondInTheQueue) {
  Stream("IN_QUEUE");
  server_.On("GET", "/v2/echo/health", 200,
             R"({"jobs": {"inQueue": 1}, "unplaceable": "no live node has a GPU of type H100"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}"}), 4);
  EXPECT_EQ(out_, "");
  EXPECT_EQ(err_, "gantry: job j-1 is IN_QUEUE: no live node has a GPU of type H100\n");
  EXPECT_EQ(slept_ms_, 1000);  // ten polls 100 ms apart, the health after the eleventh, not 90 s
  EXPECT_EQ(Targets().back(), "GET /v2/echo/health");
}

TEST_F(JobsTest, AQueuedJobOfAPlaceableEndpointWaitsItsWait) {
  Stream("IN_QUEUE");
  JobStatus(R"({"id": "j-1", "status": "IN_QUEUE"})");
  server_.On("GET", "/v2/echo/health", 200, R"({"jobs": {"inQueue": 1}})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}", "--wait", "7000"}), 4);
  EXPECT_EQ(err_.rfind("gantry: job j-1 is IN_QUEUE after 7000 ms\n", 0), 0u) << err_;
  size_t health = 0;
  for (const auto& t : Targets()) health += t == "GET /v2/echo/health";
  EXPECT_EQ(health, 2u);  // at 1 s and at 6 s
}

TEST_F(JobsTest, AReasonInTheStatusIsPrinted) {
  Stream("IN_QUEUE");
  JobStatus(R"({"id": "j-1", "status": "IN_QUEUE", "reason": "no node has enough memory"})");
  EXPECT_EQ(Run({"run", "echo", "--input", "{}", "--wait", "0"}), 4);
  EXPECT_EQ(err_,
            "gantry: job j-1 is IN_QUEUE: no node has enough memory\n"
            "hint: see it later with: gantry status echo j-1\n");
}

TEST_F(JobsTest, AnUnknownEndpointExits1) {
  server_.On("POST", "/v2/nope/run", 404,
             R"({"error": {"code": "not_found", "message": "endpoint not found: nope"}})");
  EXPECT_EQ(Run({"run", "nope", "--input", "{}"}), 1);
  EXPECT_EQ(err_, "gantry: endpoint not found: nope (HTTP 404)\n");
  EXPECT_EQ(out_, "");
}

TEST_F(JobsTest, AnUnreachableServerExits3) {
  EXPECT_EQ(RunBare({"--url", "http://127.0.0.1:1", "run", "echo", "--input", "{}"}), 3);
  EXPECT_EQ(err_.rfind("gantry: cannot reach the server at http://127.0.0.1:1: ", 0), 0u) << err_;
}

TEST_F(JobsTest, RunRefusesInputThatIsNotJson) {
  EXPECT_EQ(Run({"run", "echo", "--input", "{nope"}), 2);
  EXPECT_EQ(err_.rfind("gantry: --input is not valid JSON: ", 0), 0u) << err_;
  EXPECT_TRUE(server_.Requests().empty());
}

TEST_F(JobsTest, StatusPrintsTheOutput) {
  JobStatus(R"({"id": "j-1", "status": "COMPLETED", "delayTime": 12, "output": {"b": 2}})");
  EXPECT_EQ(Run({"status", "echo", "j-1"}), 0) << err_;
  EXPECT_EQ(out_, "{\"b\":2}\n");
  EXPECT_EQ(err_, "");
  EXPECT_EQ(OnlyRequest().target, "/v2/echo/status/j-1");
}

TEST_F(JobsTest, StatusOfAFailedJobPrintsTheErrorAndExits1) {
  JobStatus(R"({"id": "j-1", "status": "FAILED", "error": "a\nb"})");
  EXPECT_EQ(Run({"status", "echo", "j-1"}), 1);
  EXPECT_EQ(out_, "");
  EXPECT_EQ(err_, "gantry: job j-1 is FAILED:\na\nb\n");
}

TEST_F(JobsTest, StatusOfAJobNotDoneExits4) {
  JobStatus(R"({"id": "j-1", "status": "IN_PROGRESS", "output": {"step": 1}})");
  EXPECT_EQ(Run({"status", "echo", "j-1"}), 4);
  EXPECT_EQ(out_, "");
  EXPECT_EQ(err_, "gantry: job j-1 is IN_PROGRESS\n");
  EXPECT_EQ(Run({"status", "echo", "j-1", "--json"}), 4);
  EXPECT_EQ(out_, "{\"id\":\"j-1\",\"status\":\"IN_PROGRESS\",\"output\":{\"step\":1}}\n");
}

TEST_F(JobsTest, StatusOfAnExpiredJobExits1) {
  server_.On("GET", "/v2/echo/status/j-9", 404,
             R"({"error": {"code": "not_found", "message": "job not found: j-9"}})");
  EXPECT_EQ(Run({"status", "echo", "j-9"}), 1);
  EXPECT_EQ(err_, "gantry: job not found: j-9 (HTTP 404)\n");
}

}  // namespace
}  // namespace gantry::cli
