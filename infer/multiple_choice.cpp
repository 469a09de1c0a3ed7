#include "infer/multiple_choice.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "autograd/tape.h"
#include "layers/ops/cross_entropy.h"
#include "layers/ops/layout.h"

namespace braid::infer {

std::vector<ChoiceItem> parse_choice_jsonl(std::istream& in, const std::string& source) {
  std::vector<ChoiceItem> items;
  int64_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = source + ":" + std::to_string(number) + ": ";
    nlohmann::json json = nlohmann::json::parse(line, nullptr, false);
    BRAID_CHECK(!json.is_discarded(), where, "not valid JSON");
    BRAID_CHECK(json.is_object(), where, "expected an object {\"context\", \"choices\", \"gold\"}");
    BRAID_CHECK(json.contains("context") && json["context"].is_string(), where, "\"context\" must be a string");
    BRAID_CHECK(json.contains("choices") && json["choices"].is_array() && !json["choices"].empty(), where,
                "\"choices\" must be a non-empty array of strings");
    BRAID_CHECK(json.contains("gold") && json["gold"].is_number_integer(), where, "\"gold\" must be an integer");
    ChoiceItem item;
    item.context = json["context"].get<std::string>();
    for (const nlohmann::json& choice : json["choices"]) {
      BRAID_CHECK(choice.is_string(), where, "\"choices\" must be a non-empty array of strings");
      item.choices.push_back(choice.get<std::string>());
    }
    item.gold = json["gold"].get<int64_t>();
    BRAID_CHECK(item.gold >= 0 && item.gold < int64_t(item.choices.size()), where, "\"gold\" is ", item.gold,
                ", not the index of one of the ", item.choices.size(), " choices");
    item.line = number;
    items.push_back(std::move(item));
  }
  BRAID_CHECK(!items.empty(), source, ": no items");
  return items;
}

TokenizedItem tokenize_item(const ChoiceItem& item, const Tokenizer& tokenizer) {
  TokenizedItem tokenized;
  tokenized.gold = item.gold;
  // The harness moves the context's trailing spaces to the continuation, where BPE expects them.
  const size_t kept = item.context.find_last_not_of(' ') + 1;  // 0 when all spaces (npos + 1)
  const std::string context = item.context.substr(0, kept);
  const std::string spaces = item.context.substr(kept);
  tokenized.context = context.empty() ? std::vector<uint32_t>{tokenizer.bos_id()} : tokenizer.encode(context);
  for (const std::string& choice : item.choices) {
    const std::string continuation = spaces + choice;
    std::vector<uint32_t> tokens;
    if (context.empty()) {
      tokens = tokenizer.encode(continuation);
    } else {
      const std::vector<uint32_t> whole = tokenizer.encode(context + continuation);
      const size_t shared = std::min(whole.size(), tokenized.context.size());
      tokens.assign(whole.begin() + long(shared), whole.end());
    }
    BRAID_CHECK(!tokens.empty(), "line ", item.line, ": choice \"", choice, "\" adds no tokens to the context");
    tokenized.continuations.push_back(std::move(tokens));
    tokenized.continuation_bytes.push_back(int64_t(choice.size()));
  }
  return tokenized;
}

MultipleChoiceResult evaluate_multiple_choice(const HybridLM& model, const std::vector<TokenizedItem>& items,
                                              const MultipleChoiceOptions& options) {
  BRAID_CHECK(options.batch > 0, "batch must be positive, got ", options.batch);
  const uint32_t vocab = uint32_t(model.config().vocab_size);
  struct Request {
    size_t item, choice;
    std::vector<uint32_t> tokens;  // context (cut from the left to max_length + 1) + continuation
    int64_t scored;                // the last `scored` tokens are the continuation
  };
  std::vector<Request> requests;
  MultipleChoiceResult result;
  for (size_t i = 0; i < items.size(); ++i) {
    const TokenizedItem& item = items[i];
    result.scores.emplace_back(item.continuations.size());
    for (size_t c = 0; c < item.continuations.size(); ++c) {
      const std::vector<uint32_t>& continuation = item.continuations[c];
      std::vector<uint32_t> tokens = item.context;
      tokens.insert(tokens.end(), continuation.begin(), continuation.end());
      for (uint32_t id : tokens)
        BRAID_CHECK(id < vocab, "item ", i + 1, ": token id ", id, " is outside the model's vocabulary of ", vocab);
      if (options.max_length > 0 && int64_t(tokens.size()) > options.max_length + 1) {
        BRAID_CHECK(int64_t(continuation.size()) <= options.max_length, "item ", i + 1, ": a continuation of ",
                    continuation.size(), " tokens does not fit the maximum length ", options.max_length);
        tokens.erase(tokens.begin(), tokens.end() - (options.max_length + 1));
      }
      result.scores[i][c].tokens = int64_t(continuation.size());
      result.scores[i][c].bytes = item.continuation_bytes[c];
      requests.push_back({i, c, std::move(tokens), int64_t(continuation.size())});
    }
  }

  autograd::NoGradScope no_grad;
  const Device device = model.device();
  size_t items_done = 0;
  for (size_t first = 0; first < requests.size(); first += size_t(options.batch)) {
    const size_t last = std::min(requests.size(), first + size_t(options.batch));
    int64_t positions = 0;
    for (size_t r = first; r < last; ++r) positions = std::max(positions, int64_t(requests[r].tokens.size()) - 1);
    // Padded at the end with token 0: the model is causal, so padding never reaches a scored position.
    std::vector<double> inputs(size_t(int64_t(last - first) * positions), 0.0);
    for (size_t r = first; r < last; ++r)
      for (size_t t = 0; t + 1 < requests[r].tokens.size(); ++t)
        inputs[(r - first) * size_t(positions) + t] = requests[r].tokens[t];
    autograd::Var hidden = model.hidden(autograd::leaf(
        Tensor::from_values(inputs, {int64_t(last - first), positions}, DType::i32).to(device)));
    for (size_t r = first; r < last; ++r) {
      const Request& request = requests[r];
      const int64_t start = int64_t(request.tokens.size()) - 1 - request.scored;
      std::vector<double> targets(request.tokens.end() - request.scored, request.tokens.end());
      autograd::Var rows = ops::narrow(ops::narrow(hidden, 0, int64_t(r - first), 1), 1, start, request.scored);
      const double mean = ops::lm_head_cross_entropy(
          rows, model.embedding().weight(),
          autograd::leaf(Tensor::from_values(targets, {1, request.scored}, DType::i32).to(device)))->value.item();
      result.scores[request.item][request.choice].loglikelihood = -mean * double(request.scored);
      if (request.choice + 1 == items[request.item].continuations.size()) ++items_done;
    }
    if (options.progress) options.progress(int64_t(items_done), int64_t(items.size()));
  }

  int64_t correct = 0, correct_norm = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::vector<ChoiceScore>& scores = result.scores[i];
    int64_t best = 0, best_norm = 0;
    auto normalized = [](const ChoiceScore& s) { return s.loglikelihood / double(std::max<int64_t>(1, s.bytes)); };
    for (size_t c = 1; c < scores.size(); ++c) {
      if (scores[c].loglikelihood > scores[size_t(best)].loglikelihood) best = int64_t(c);
      if (normalized(scores[c]) > normalized(scores[size_t(best_norm)])) best_norm = int64_t(c);
    }
    result.predicted.push_back(best);
    result.predicted_norm.push_back(best_norm);
    correct += best == items[i].gold;
    correct_norm += best_norm == items[i].gold;
  }
  result.acc = double(correct) / double(items.size());
  result.acc_norm = double(correct_norm) / double(items.size());
  return result;
}

}  // namespace braid::infer
