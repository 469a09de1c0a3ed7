// Multiple choice in the LM Evaluation Harness style (MODEL.md section 9): each choice is scored by
// the summed log-likelihood of its continuation tokens given the context; `acc` picks the highest
// sum, `acc_norm` the highest sum per byte of the continuation's text.
//
// Input: JSONL, one item a line: {"context": str, "choices": [str, ...], "gold": int}. Tokens as the
// harness makes them: the context's trailing spaces move to the front of each continuation, the
// continuation's tokens are those of encode(context + continuation) after encode(context), and an
// empty context becomes the begin-of-document token.
#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <string>
#include <vector>

#include "layers/hybrid_lm.h"
#include "tools/tokenizer.h"

namespace braid::infer {

struct ChoiceItem {
  std::string context;
  std::vector<std::string> choices;
  int64_t gold = 0;
  int64_t line = 0;  // in the JSONL source, from 1
};

// Raises braid::Error naming `source` and the line number of the first malformed line (not JSON,
// missing or mistyped keys, no choices, gold out of range). Blank lines are skipped.
std::vector<ChoiceItem> parse_choice_jsonl(std::istream& in, const std::string& source);

// One item in tokens: the context and each choice's continuation, with its text's byte length.
struct TokenizedItem {
  std::vector<uint32_t> context;
  std::vector<std::vector<uint32_t>> continuations;
  std::vector<int64_t> continuation_bytes;
  int64_t gold = 0;
};

TokenizedItem tokenize_item(const ChoiceItem& item, const Tokenizer& tokenizer);

struct ChoiceScore {
  double loglikelihood = 0;  // summed over the continuation's tokens (nats)
  int64_t tokens = 0;
  int64_t bytes = 0;
};

struct MultipleChoiceResult {
  std::vector<std::vector<ChoiceScore>> scores;  // per item, per choice
  std::vector<int64_t> predicted, predicted_norm;
  double acc = 0, acc_norm = 0;
};

struct MultipleChoiceOptions {
  int64_t batch = 8;        // sequences (context + one continuation) per forward pass
  int64_t max_length = 0;   // longer sequences lose context tokens from the left (0 = no limit)
  std::function<void(int64_t, int64_t)> progress;  // (items done, items)
};

MultipleChoiceResult evaluate_multiple_choice(const HybridLM& model, const std::vector<TokenizedItem>& items,
                                              const MultipleChoiceOptions& options);

}  // namespace braid::infer
