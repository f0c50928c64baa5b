#pragma once
// Text helpers for messages to people.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace gantry {

// The optimal-string-alignment distance between `a` and `b`, ignoring ASCII case: insertions,
// deletions, substitutions and swaps of two adjacent characters count one each.
size_t EditDistance(std::string_view a, std::string_view b);

// The candidate `name` was most likely meant to be, for a "did you mean X?" hint: one equal to
// it but for ASCII case, else the nearest by EditDistance within 2 (within 1 for names of fewer
// than 4 characters), the first in `candidates` on a tie. Empty when none is that near, or when
// `name` is itself a candidate.
std::string DidYouMean(std::string_view name, const std::vector<std::string_view>& candidates);

}  // namespace gantry
