// Greedy BPE training with incremental pair counts: each merge revisits only the words that hold the
// merged pair, and a max-heap with lazy deletion finds the next most frequent pair.
#include "tools/bpe_trainer.h"

#include <algorithm>
#include <optional>
#include <queue>
#include <string_view>
#include <unordered_map>

#include "runtime/error.h"

namespace braid {
namespace {

struct Word {
  std::vector<uint32_t> ids;
  int64_t count;  // occurrences of this piece in the documents
};

uint64_t pair_key(uint32_t left, uint32_t right) { return (uint64_t{left} << 32) | right; }
uint32_t left_of(uint64_t key) { return static_cast<uint32_t>(key >> 32); }
uint32_t right_of(uint64_t key) { return static_cast<uint32_t>(key); }

struct Candidate {
  int64_t count;
  uint64_t pair;
};

// Orders the max-heap: higher count first, then the smaller (left, right).
struct LowerPriority {
  bool operator()(const Candidate& a, const Candidate& b) const {
    if (a.count != b.count) return a.count < b.count;
    return a.pair > b.pair;
  }
};

// Distinct pieces, in byte order (so training never depends on hash order), with their counts.
std::vector<Word> count_words(const std::vector<std::string>& documents) {
  std::unordered_map<std::string_view, int64_t> counts;
  for (const std::string& document : documents)
    for (std::string_view piece : split_pretokens(document)) ++counts[piece];
  std::vector<std::pair<std::string_view, int64_t>> sorted(counts.begin(), counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (const auto& [piece, count] : sorted) {
    Word word{{}, count};
    for (unsigned char byte : piece) word.ids.push_back(byte);
    words.push_back(std::move(word));
  }
  return words;
}

template <typename F>
void for_each_pair(const std::vector<uint32_t>& ids, F&& visit) {
  for (size_t i = 0; i + 1 < ids.size(); ++i) visit(pair_key(ids[i], ids[i + 1]));
}

// Replaces every (left, right) in `ids` by `merged`, left to right without overlap; false if none.
bool merge_in_word(std::vector<uint32_t>& ids, uint32_t left, uint32_t right, uint32_t merged) {
  size_t out = 0;
  bool changed = false;
  for (size_t i = 0; i < ids.size(); ++out) {
    if (i + 1 < ids.size() && ids[i] == left && ids[i + 1] == right) {
      ids[out] = merged;
      i += 2;
      changed = true;
    } else {
      ids[out] = ids[i++];
    }
  }
  ids.resize(out);
  return changed;
}

}  // namespace

Tokenizer train_bpe(const std::vector<std::string>& documents, size_t vocab_size) {
  BRAID_CHECK(vocab_size >= 257, "train_bpe: vocab size ", vocab_size,
              " is below 257 (the 256 bytes and <|endoftext|>)");
  BRAID_CHECK(vocab_size <= UINT32_MAX, "train_bpe: vocab size ", vocab_size, " does not fit 32-bit ids");
  std::vector<Word> words = count_words(documents);

  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<uint32_t>> pair_words;  // may hold stale words and repeats
  for (uint32_t w = 0; w < words.size(); ++w) {
    for_each_pair(words[w].ids, [&](uint64_t pair) {
      pair_counts[pair] += words[w].count;
      std::vector<uint32_t>& holders = pair_words[pair];
      if (holders.empty() || holders.back() != w) holders.push_back(w);
    });
  }
  std::priority_queue<Candidate, std::vector<Candidate>, LowerPriority> candidates;
  for (const auto& [pair, count] : pair_counts) candidates.push({count, pair});

  std::vector<std::string> tokens;
  for (int byte = 0; byte < 256; ++byte) tokens.emplace_back(1, static_cast<char>(byte));
  std::vector<uint64_t> visited_at(words.size(), 0);
  for (uint64_t step = 1; tokens.size() + 1 < vocab_size; ++step) {
    // The best pair whose heap entry is current (counts change after an entry is pushed).
    std::optional<uint64_t> best;
    while (!candidates.empty() && !best) {
      Candidate top = candidates.top();
      candidates.pop();
      auto it = pair_counts.find(top.pair);
      if (it != pair_counts.end() && it->second == top.count) best = top.pair;
    }
    if (!best) break;
    uint32_t left = left_of(*best), right = right_of(*best);
    // The bytes are new: merges apply to every word alike, so a span aligned with token boundaries is
    // split as that span alone would be, and no other pair can have made them (from_ranks checks).
    uint32_t merged = static_cast<uint32_t>(tokens.size());
    tokens.push_back(tokens[left] + tokens[right]);

    std::unordered_map<uint64_t, int64_t> count_changes;
    std::vector<uint32_t> holders = std::move(pair_words[*best]);
    pair_words.erase(*best);
    for (uint32_t w : holders) {
      if (visited_at[w] == step) continue;
      visited_at[w] = step;
      Word& word = words[w];
      std::vector<uint32_t> before = word.ids;
      if (!merge_in_word(word.ids, left, right, merged)) continue;
      for_each_pair(before, [&](uint64_t pair) { count_changes[pair] -= word.count; });
      for_each_pair(word.ids, [&](uint64_t pair) {
        count_changes[pair] += word.count;
        if (left_of(pair) == merged || right_of(pair) == merged) {
          std::vector<uint32_t>& pair_holders = pair_words[pair];
          if (pair_holders.empty() || pair_holders.back() != w) pair_holders.push_back(w);
        }
      });
    }
    for (const auto& [pair, change] : count_changes) {
      if (change == 0) continue;
      int64_t& count = pair_counts[pair];
      count += change;
      if (count > 0) {
        candidates.push({count, pair});
      } else {
        pair_counts.erase(pair);
      }
    }
  }
  uint32_t end_of_text = static_cast<uint32_t>(tokens.size());
  return Tokenizer::from_ranks(std::move(tokens), {{"<|endoftext|>", end_of_text}});
}

}  // namespace braid
