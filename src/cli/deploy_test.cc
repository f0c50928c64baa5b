// gantry deploy against a fake server: the blobs it asks about and uploads, the bundle, and
// the endpoint it creates or updates; images and their pulls.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "cli/cli_test_util.h"
#include "common/env.h"
#include "common/json.h"

namespace gantry::cli {
namespace {

namespace fs = std::filesystem;

constexpr char kToml[] = R"(id = "echo"
workersMax = 2
[worker]
command = ["python3", "handler.py"]
)";
constexpr char kHandler[] = "print('hi')\n";
constexpr char kBundle[] = "0123456789abcdef0123456789abcdef";

class DeployTest : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    dir_ = fs::path(testing::TempDir()) / ("deploy_test_" + std::to_string(getpid())) / "echo";
    fs::remove_all(dir_);
    Write("gantry.toml", kToml);
    Write("handler.py", kHandler);
    Write("copy.py", kHandler);  // the same content: uploaded once
    Write("sub/data.txt", "x");
    Write("__pycache__/handler.pyc", "skipped");
    server_.On("POST", "/v1/bundles", 200, std::string(R"({"digest": ")") + kBundle + "\"}");
    server_.On("PUT", "/v1/blobs/" + Sha256Hex(kToml), 200, "{}");
    server_.On("PUT", "/v1/blobs/" + Sha256Hex(kHandler), 200, "{}");
  }
  void TearDown() override { fs::remove_all(dir_.parent_path()); }

  void Write(const std::string& name, const std::string& data) {
    fs::create_directories((dir_ / name).parent_path());
    std::ofstream(dir_ / name) << data;
    fs::permissions(dir_ / name, fs::perms(0644));
  }
  // The server lacks the blobs of gantry.toml and handler.py.
  void MissingTomlAndHandler() {
    server_.On("POST", "/v1/blobs/missing", 200,
               R"({"missing": [")" + Sha256Hex(kToml) + R"(", ")" + Sha256Hex(kHandler) + "\"]}");
  }
  std::vector<http::Request> RequestsTo(const std::string& method, const std::string& path) {
    std::vector<http::Request> out;
    for (auto& r : server_.Requests()) {
      if (r.method == method && r.path() == path) out.push_back(r);
    }
    return out;
  }

  fs::path dir_;
};

TEST_F(DeployTest, UploadsMissingBlobsOnceAndCreatesTheEndpoint) {
  MissingTomlAndHandler();
  server_.On("POST", "/v1/endpoints", 200, R"({"id": "echo", "version": 1})");
  EXPECT_EQ(Run({"deploy", dir_.string()}), 0) << err_;
  const size_t bytes = sizeof kToml - 1 + sizeof kHandler - 1;
  EXPECT_EQ(out_, "deployed echo: version 1, bundle 0123456789ab (4 files, 2 uploaded, " +
                      std::to_string(bytes) + " bytes)\n");

  auto asked = ParseJson(RequestsTo("POST", "/v1/blobs/missing").at(0).body);
  ASSERT_TRUE(asked.ok());
  std::multiset<std::string> digests;
  for (const auto& d : asked->as_object().at("digests").as_array())
    digests.insert(std::string(d.as_string()));
  EXPECT_EQ(digests, (std::multiset<std::string>{Sha256Hex(kToml), Sha256Hex(kHandler),
                                                 Sha256Hex(kHandler), Sha256Hex("x")}));
  EXPECT_EQ(RequestsTo("PUT", "/v1/blobs/" + Sha256Hex(kToml)).at(0).body, kToml);
  EXPECT_EQ(RequestsTo("PUT", "/v1/blobs/" + Sha256Hex(kHandler)).size(), 1u);
  // One line a blob; handler.py and copy.py are the same blob, whichever comes first.
  EXPECT_NE(err_.find("uploading gantry.toml (" + std::to_string(sizeof kToml - 1) + " bytes)"),
            std::string::npos)
      << err_;
  EXPECT_NE(err_.find(".py (12 bytes)"), std::string::npos) << err_;
  EXPECT_EQ(std::count(err_.begin(), err_.end(), '\n'), 2) << err_;

  auto manifest = ParseJson(RequestsTo("POST", "/v1/bundles").at(0).body);
  ASSERT_TRUE(manifest.ok());
  std::set<std::string> files;
  for (const auto& f : manifest->as_object().at("files").as_array()) {
    files.insert(std::string(f.as_object().at("path").as_string()) + " " +
                 ToJson(f.as_object().at("mode")));
  }
  EXPECT_EQ(files, (std::set<std::string>{"copy.py 420", "gantry.toml 420", "handler.py 420",
                                          "sub/data.txt 420"}));

  // Whether it exists, then (after the create) whether any node can run it.
  EXPECT_EQ(RequestsTo("GET", "/v1/endpoints/echo").size(), 2u);
  EXPECT_EQ(RequestsTo("POST", "/v1/endpoints").at(0).body,
            R"({"id":"echo","workersMax":2,"worker":{"command":["python3","handler.py"]},)"
            R"("bundle":"0123456789abcdef0123456789abcdef"})");
}

TEST_F(DeployTest, UpdatesAnEndpointThatExists) {
  server_.On("POST", "/v1/blobs/missing", 200, R"({"missing": []})");
  server_.On("GET", "/v1/endpoints/other", 200, R"({"id": "other", "version": 1})");
  server_.On("PATCH", "/v1/endpoints/other", 200, R"({"id": "other", "version": 2})");
  EXPECT_EQ(Run({"deploy", dir_.string() + "/", "--id", "other"}), 0) << err_;
  EXPECT_EQ(out_,
            "deployed other: version 2, bundle 0123456789ab (4 files, 0 uploaded, 0 bytes)\n");
  EXPECT_TRUE(RequestsTo("PUT", "/v1/blobs/" + Sha256Hex(kToml)).empty());
  EXPECT_EQ(RequestsTo("PATCH", "/v1/endpoints/other").at(0).body,
            R"({"id":"other","workersMax":2,"worker":{"command":["python3","handler.py"]},)"
            R"("bundle":"0123456789abcdef0123456789abcdef"})");
}

TEST_F(DeployTest, TheIdDefaultsToTheDirectorysName) {
  Write("gantry.toml", "workersMax = 1\n");
  server_.On("POST", "/v1/blobs/missing", 200, R"({"missing": []})");
  server_.On("POST", "/v1/endpoints", 200, R"({"id": "echo", "version": 1})");
  EXPECT_EQ(Run({"deploy", dir_.string()}), 0) << err_;
  EXPECT_EQ(RequestsTo("GET", "/v1/endpoints/echo").size(), 2u);
  EXPECT_EQ(RequestsTo("POST", "/v1/endpoints").at(0).body,
            R"({"workersMax":1,"id":"echo","bundle":"0123456789abcdef0123456789abcdef"})");
}

TEST_F(DeployTest, WithJsonPrintsTheEndpoint) {
  server_.On("POST", "/v1/blobs/missing", 200, R"({"missing": []})");
  server_.On("POST", "/v1/endpoints", 200, R"({"id": "echo", "version": 1})");
  EXPECT_EQ(Run({"--json", "deploy", dir_.string()}), 0) << err_;
  EXPECT_EQ(out_, "{\"id\":\"echo\",\"version\":1}\n");
}

TEST_F(DeployTest, AFailedUploadExits1) {
  MissingTomlAndHandler();
  server_.On("PUT", "/v1/blobs/" + Sha256Hex(kHandler), 507,
             R"({"error": {"code": "RESOURCE_EXHAUSTED", "message": "disk full"}})");
  server_.On("PUT", "/v1/blobs/" + Sha256Hex(kToml), 507,
             R"({"error": {"code": "RESOURCE_EXHAUSTED", "message": "disk full"}})");
  EXPECT_EQ(Run({"deploy", dir_.string()}), 1);
  EXPECT_NE(err_.find("gantry: disk full (HTTP 507)\n"), std::string::npos) << err_;
  EXPECT_TRUE(RequestsTo("POST", "/v1/bundles").empty());
}

TEST_F(DeployTest, NeedsADirectoryOrAnImage) {
  EXPECT_EQ(Run({"deploy"}), 2);
  EXPECT_EQ(err_, "gantry: deploy needs a directory or --image (see gantry deploy --help)\n");
  EXPECT_TRUE(server_.Requests().empty());
}

TEST_F(DeployTest, ADirectoryWithoutGantryTomlExits2) {
  fs::remove(dir_ / "gantry.toml");
  EXPECT_EQ(Run({"deploy", dir_.string()}), 2);
  EXPECT_EQ(err_, "gantry: " + (dir_ / "gantry.toml").string() + " not found\n");
}

TEST_F(DeployTest, ADirectoryThatDoesNotExistExits2) {
  const std::string missing = (dir_.parent_path() / "nope").string();
  EXPECT_EQ(Run({"deploy", missing}), 2);
  EXPECT_EQ(err_, "gantry: directory " + missing + " does not exist\n");
  EXPECT_EQ(Run({"deploy", (dir_ / "handler.py").string()}), 2);
  EXPECT_EQ(err_, "gantry: " + (dir_ / "handler.py").string() + " is not a directory\n");
  EXPECT_TRUE(server_.Requests().empty());
}

TEST_F(DeployTest, ATypoInGantryTomlIsCaughtBeforeAnyUpload) {
  Write("gantry.toml", "id = \"echo\"\nworkersMaxx = 2\n");
  EXPECT_EQ(Run({"deploy", dir_.string()}), 2);
  EXPECT_EQ(err_, "gantry: gantry.toml: unknown field: workersMaxx (did you mean workersMax?)\n");
  EXPECT_EQ(out_, "");
  Write("gantry.toml", "gpuTypeIDs = [\"cpu\"]\n[worker]\ncomand = [\"python3\"]\n");
  EXPECT_EQ(Run({"deploy", dir_.string()}), 2);
  EXPECT_EQ(err_, "gantry: gantry.toml: unknown field: gpuTypeIDs (did you mean gpuTypeIds?)\n");
  Write("gantry.toml", "[worker]\ncomand = [\"python3\"]\n");
  EXPECT_EQ(Run({"deploy", dir_.string()}), 2);
  EXPECT_EQ(err_,
            "gantry: gantry.toml: unknown field: worker.comand (did you mean worker.command?)\n");
  Write("gantry.toml", "replicas = 2\n");
  EXPECT_EQ(Run({"deploy", dir_.string()}), 2);
  EXPECT_EQ(err_, "gantry: gantry.toml: unknown field: replicas\n");
  EXPECT_TRUE(server_.Requests().empty());
}

TEST_F(DeployTest, AnEndpointNoNodeCanRunIsAWarning) {
  server_.On("POST", "/v1/blobs/missing", 200, R"({"missing": []})");
  server_.On("GET", "/v1/endpoints/echo", 404,
             R"({"error": {"code": "not_found", "message": "endpoint not found: echo"}})");
  server_.Then(
      "GET", "/v1/endpoints/echo", 200,
      R"({"id": "echo", "health": {"unplaceable": "no live node has a GPU of type H100"}})");
  server_.On("POST", "/v1/endpoints", 200, R"({"id": "echo", "version": 1})");
  EXPECT_EQ(Run({"deploy", dir_.string()}), 0) << err_;
  EXPECT_EQ(out_, "deployed echo: version 1, bundle 0123456789ab (4 files, 0 uploaded, 0 bytes)\n");
  EXPECT_EQ(err_, "warning: no live node has a GPU of type H100\n");
  // An update too, and with --json; an empty reason is none.
  server_.On("GET", "/v1/endpoints/echo", 200,
             R"({"id": "echo", "health": {"unplaceable": "no live node has 8 GPUs"}})");
  server_.On("PATCH", "/v1/endpoints/echo", 200, R"({"id": "echo", "version": 2})");
  EXPECT_EQ(Run({"deploy", dir_.string(), "--json"}), 0) << err_;
  EXPECT_EQ(out_, "{\"id\":\"echo\",\"version\":2}\n");
  EXPECT_EQ(err_, "warning: no live node has 8 GPUs\n");
  server_.On("GET", "/v1/endpoints/echo", 200, R"({"id": "echo", "health": {"unplaceable": ""}})");
  EXPECT_EQ(Run({"deploy", dir_.string()}), 0) << err_;
  EXPECT_EQ(err_, "");
}

TEST_F(DeployTest, ABadGantryTomlExits2WithLineAndColumn) {
  Write("gantry.toml", "id = \"echo\"\nworkersMax = = 2\n");
  EXPECT_EQ(Run({"deploy", dir_.string()}), 2);
  EXPECT_EQ(err_.rfind("gantry: gantry.toml line 2, column ", 0), 0u) << err_;
  EXPECT_TRUE(server_.Requests().empty());
}

TEST_F(DeployTest, AnImageWithoutWaiting) {
  server_.On("POST", "/v1/endpoints", 200, R"({"id": "img", "version": 1, "image": "reg/x:1"})");
  EXPECT_EQ(Run({"deploy", "--image", "reg/x:1", "--id", "img", "--no-wait"}), 0) << err_;
  EXPECT_EQ(out_, "deployed img: version 1, image reg/x:1\n");
  EXPECT_EQ(RequestsTo("POST", "/v1/endpoints").at(0).body,
            R"({"id":"img","image":"reg/x:1","bundle":""})");
  EXPECT_TRUE(RequestsTo("POST", "/v1/blobs/missing").empty());
}

TEST_F(DeployTest, AnImageFollowsItsPullOnTheNodes) {
  server_.On("GET", "/v1/endpoints/img", 200,
             R"({"id": "img", "imagePulls": [{"nodeId": "n1", "state": "ready"},
                 {"nodeId": "n2", "state": "ready", "detail": "12 MB"}]})");
  server_.On("PATCH", "/v1/endpoints/img", 200, R"({"id": "img", "version": 3, "image": "r/y"})");
  EXPECT_EQ(Run({"deploy", "--image", "r/y", "--id", "img"}), 0) << err_;
  EXPECT_EQ(out_,
            "deployed img: version 3, image r/y\n"
            "  n1: ready\n"
            "  n2: ready: 12 MB\n"
            "image ready on 2 nodes\n");
}

TEST_F(DeployTest, AnImageThatFailsToPullExits1) {
  server_.On("GET", "/v1/endpoints/img", 200,
             R"({"id": "img", "imagePulls": [{"nodeId": "n1", "state": "failed",
                                              "detail": "manifest unknown"}]})");
  server_.On("PATCH", "/v1/endpoints/img", 200, R"({"id": "img", "version": 3, "image": "r/y"})");
  EXPECT_EQ(Run({"deploy", "--image", "r/y", "--id", "img"}), 1);
  EXPECT_EQ(out_, "deployed img: version 3, image r/y\n  n1: failed: manifest unknown\n");
  EXPECT_EQ(err_,
            "gantry: the image could not be pulled on 1 of 1 nodes (see above); workers will try "
            "again when they start\n");
}

}  // namespace
}  // namespace gantry::cli
