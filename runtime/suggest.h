// "Did you mean" for unknown names in configs and command lines.
#pragma once

#include <string>
#include <vector>

namespace braid {

// Case-insensitive Levenshtein distance.
size_t edit_distance(const std::string& a, const std::string& b);

// ` (did you mean "x"?)` naming the closest candidate (first in order on ties) when it is close
// enough to be a plausible typo, else ` (expected one of a, b, c)`. `prefix` is prepended to the
// suggested name (e.g. the key path of the enclosing object).
std::string suggestion(const std::string& name, const std::vector<std::string>& candidates,
                       const std::string& prefix = "");

}  // namespace braid
