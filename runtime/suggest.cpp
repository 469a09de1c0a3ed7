#include "runtime/suggest.h"

#include <algorithm>
#include <cctype>

namespace braid {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> previous(b.size() + 1), current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const bool same = std::tolower((unsigned char)a[i - 1]) == std::tolower((unsigned char)b[j - 1]);
      const size_t substitute = previous[j - 1] + (same ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitute});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::string suggestion(const std::string& name, const std::vector<std::string>& candidates,
                       const std::string& prefix) {
  size_t best = 0;
  for (size_t i = 1; i < candidates.size(); ++i)
    if (edit_distance(name, candidates[i]) < edit_distance(name, candidates[best])) best = i;
  if (!candidates.empty() && edit_distance(name, candidates[best]) <= std::max<size_t>(2, name.size() / 2))
    return " (did you mean \"" + prefix + candidates[best] + "\"?)";
  std::string all;
  for (size_t i = 0; i < candidates.size(); ++i) all += (i ? ", " : "") + candidates[i];
  return " (expected one of " + all + ")";
}

}  // namespace braid
