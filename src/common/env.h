#pragma once
// OS seams (STYLE.md §2): clock and randomness. Passed in from main, faked in tests.

#include <atomic>
#include <cstdint>
#include <string>

namespace gantry {

// Wall-clock milliseconds since the Unix epoch. Persisted timestamps use this clock, so
// deadlines survive a restart of the server. Thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override;
};

// A clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  int64_t NowMs() const override { return now_.load(); }
  void Advance(int64_t ms) { now_ += ms; }
  void Set(int64_t ms) { now_ = ms; }

 private:
  std::atomic<int64_t> now_;
};

// Cryptographically strong random bytes (from the OS). Thread-safe.
std::string RandomBytes(size_t n);

// An id like "j-3f9a..." : prefix, dash, `hex_chars` lowercase hex characters of randomness.
std::string NewId(const std::string& prefix, size_t hex_chars = 20);

// A secret for API keys and worker tokens: `prefix` followed by 40 hex characters.
std::string NewSecret(const std::string& prefix);

// A fast pseudo-random generator (xoshiro256**) seeded from the OS. For ids that must be
// unique and hard to guess in practice, not for secrets. Not thread-safe: one per thread/owner.
class FastRandom {
 public:
  FastRandom();
  uint64_t Next();
  // `n` lowercase hex characters.
  std::string Hex(size_t n);

 private:
  uint64_t s_[4];
};

// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(const std::string& data);

// Constant-time comparison of two strings of equal length.
bool ConstantTimeEquals(const std::string& a, const std::string& b);

}  // namespace gantry
