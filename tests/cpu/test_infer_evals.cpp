// The infer binary's evaluations against independent oracles: perplexity and position-wise loss
// against a log-softmax of the full logits written here; multiple choice on a model whose weights
// make one token certain (known answers) and on a random model (log-likelihoods against the
// oracle, batched, padded and truncated); JSONL errors with line numbers; needle construction and
// grid scoring; the loader's errors for weights that do not fit the config.
#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>

#include "autograd/tape.h"
#include "infer/model_loader.h"
#include "infer/multiple_choice.h"
#include "infer/needle.h"
#include "infer/perplexity.h"
#include "layers/hybrid_lm.h"
#include "tests/micro_model.h"
#include "tests/test_util.h"

namespace braid::infer {
namespace {

using testing::error_of;
using testing::micro_config;
using testing::sample_ids;


std::unique_ptr<HybridLM> random_model(const std::string& pattern, int64_t vocab, uint64_t seed) {
  auto model = std::make_unique<HybridLM>(micro_config(pattern, vocab), TensorOptions{});
  Generator generator(seed);
  model->initialize(generator);
  return model;
}

// The oracle: log p(tokens[t + 1] | tokens[0..t]) for every t, from the full logits and a
// log-softmax computed here in double precision.
std::vector<double> token_logprobs(const HybridLM& model, const std::vector<uint32_t>& tokens) {
  autograd::NoGradScope no_grad;
  const int64_t vocab = model.config().vocab_size;
  std::vector<double> ids(tokens.begin(), tokens.end() - 1);
  std::vector<double> logits =
      model.logits(autograd::leaf(Tensor::from_values(ids, {1, int64_t(ids.size())}, DType::i32)))->value.to_doubles();
  std::vector<double> logprobs;
  for (size_t t = 0; t + 1 < tokens.size(); ++t) {
    const double* row = logits.data() + t * size_t(vocab);
    double top = row[0];
    for (int64_t v = 1; v < vocab; ++v) top = std::max(top, row[v]);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - top);
    logprobs.push_back(row[tokens[t + 1]] - top - std::log(sum));
  }
  return logprobs;
}

TEST(InferPerplexity, EqualsExpMeanNllWithPositionBuckets) {
  auto model = random_model("MTH", 13, 7);
  const std::vector<uint32_t> tokens = sample_ids(75, 13, 3);
  const int64_t context = 16, bucket = 5;
  const std::vector<Window> windows = split_windows(tokens, context);
  ASSERT_EQ(windows.size(), 5u);  // 74 targets: 4 windows of 16 and one of 10
  EXPECT_EQ(windows.back().size(), 11u);

  // Oracle: each window alone, every target's NLL from the full logits.
  double total = 0;
  int64_t count = 0;
  std::map<int64_t, std::pair<double, int64_t>> by_bucket;
  for (size_t w = 0; w * size_t(context) + 1 < tokens.size(); ++w) {
    const size_t start = w * size_t(context);
    std::vector<uint32_t> window(tokens.begin() + long(start),
                                 tokens.begin() + long(std::min(tokens.size(), start + size_t(context) + 1)));
    const std::vector<double> logprobs = token_logprobs(*model, window);
    for (size_t t = 0; t < logprobs.size(); ++t) {
      total -= logprobs[t];
      ++count;
      by_bucket[int64_t(t) / bucket].first -= logprobs[t];
      ++by_bucket[int64_t(t) / bucket].second;
    }
  }
  for (int64_t batch : {1, 3}) {
    PerplexityOptions options;
    options.bucket = bucket;
    options.batch = batch;
    const PerplexityResult result = evaluate_perplexity(*model, windows, options);
    EXPECT_EQ(result.tokens, count);
    EXPECT_EQ(result.windows, 5);
    EXPECT_NEAR(result.mean_nll(), total / double(count), 1e-5 * total / double(count));
    EXPECT_NEAR(result.perplexity(), std::exp(total / double(count)), 1e-4);
    ASSERT_EQ(result.buckets.size(), by_bucket.size());
    for (const auto& [index, sum_count] : by_bucket) {
      const PositionBucket& b = result.buckets[size_t(index)];
      EXPECT_EQ(b.begin, index * bucket);
      EXPECT_EQ(b.count, sum_count.second) << "bucket " << index;
      EXPECT_NEAR(b.mean_nll, sum_count.first / double(sum_count.second), 1e-5) << "bucket " << index;
    }
  }

  // A token budget ending inside the second window scores exactly the first 23 targets.
  PerplexityOptions budget;
  budget.bucket = bucket;
  budget.max_tokens = 23;
  const PerplexityResult cut = evaluate_perplexity(*model, windows, budget);
  double expected = 0;
  for (double logprob : token_logprobs(*model, windows[0])) expected -= logprob;
  const std::vector<uint32_t> second(windows[1].begin(), windows[1].begin() + 8);
  for (double logprob : token_logprobs(*model, second)) expected -= logprob;
  EXPECT_EQ(cut.tokens, 23);
  EXPECT_NEAR(cut.nll_sum, expected, 1e-5 * expected);
}

TEST(InferPerplexity, RejectsIdsOutsideTheVocabulary) {
  auto model = random_model("T", 13, 1);
  const std::string message = error_of([&] { evaluate_perplexity(*model, {{1, 2, 13, 4}}, {}); });
  EXPECT_NE(message.find("13"), std::string::npos) << message;
}

// A model whose next token is `certain` whatever the context: every block's weights are zero (so
// each block passes its input through), and the tied embedding rows share one direction, with
// `certain`'s row 3x longer, so the head's logits favour `certain` by about 11 nats.
std::unique_ptr<HybridLM> certain_model(int64_t vocab, uint32_t certain) {
  auto model = random_model("T", vocab, 5);
  const std::vector<double> noise = testing::random_normal({vocab, 8}, 11).to_doubles();
  for (const Parameter& parameter : model->named_parameters()) {
    Tensor& value = parameter.variable->value;
    if (parameter.name == "embed.weight") {
      std::vector<double> rows(size_t(vocab) * 8);
      for (int64_t v = 0; v < vocab; ++v)
        for (int64_t j = 0; j < 8; ++j)
          rows[size_t(v * 8 + j)] = (j == 0 ? (uint32_t(v) == certain ? 3.0 : 1.0) : 0.0) + 0.02 * noise[size_t(v * 8 + j)];
      value.copy_from(Tensor::from_values(rows, value.shape()));
    } else if (parameter.name == "final_norm.weight") {
      value.fill_(2.0);
    } else {
      value.fill_(0.0);
    }
  }
  return model;
}

TEST(InferMultipleChoice, CertainModelGivesKnownAnswers) {
  const uint32_t x = 7;
  auto model = certain_model(11, x);
  const std::vector<uint32_t> context = sample_ids(6, 11, 4);
  // Item 0: the one continuation of `x` wins. Item 1: two `x`s beat one other token. Item 2: the
  // gold choice is less likely in total (three unlikely tokens vs one) but far longer in bytes, so
  // only acc_norm gets it right.
  std::vector<TokenizedItem> items = {
      {context, {{x}, {2}, {9}}, {1, 1, 1}, 0},
      {{3, 4}, {{5}, {x, x}}, {1, 1}, 1},
      {{1}, {{x, 2}, {2, 3, 4}}, {1, 100}, 1},
  };
  MultipleChoiceOptions options;
  options.batch = 4;
  const MultipleChoiceResult result = evaluate_multiple_choice(*model, items, options);
  EXPECT_EQ(result.predicted, (std::vector<int64_t>{0, 1, 0}));
  EXPECT_EQ(result.predicted_norm, (std::vector<int64_t>{0, 1, 1}));
  EXPECT_DOUBLE_EQ(result.acc, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(result.acc_norm, 1.0);
  for (size_t i = 0; i < items.size(); ++i) {
    for (size_t c = 0; c < items[i].continuations.size(); ++c) {
      std::vector<uint32_t> tokens = items[i].context;
      tokens.insert(tokens.end(), items[i].continuations[c].begin(), items[i].continuations[c].end());
      const std::vector<double> logprobs = token_logprobs(*model, tokens);
      double expected = 0;
      for (size_t t = items[i].context.size() - 1; t < logprobs.size(); ++t) expected += logprobs[t];
      const ChoiceScore& score = result.scores[i][c];
      EXPECT_NEAR(score.loglikelihood, expected, 1e-4 + 1e-5 * std::abs(expected)) << "item " << i << " choice " << c;
      EXPECT_EQ(score.tokens, int64_t(items[i].continuations[c].size()));
      EXPECT_EQ(score.bytes, items[i].continuation_bytes[c]);
    }
  }
  // The construction is what makes the answers known: `x` is near certain, anything else is not.
  EXPECT_GT(result.scores[0][0].loglikelihood, -0.01);
  EXPECT_LT(result.scores[0][1].loglikelihood, -5.0);
}

TEST(InferMultipleChoice, BatchedPaddedAndTruncatedScoresMatchTheOracle) {
  auto model = random_model("MTH", 17, 9);
  std::vector<TokenizedItem> items;
  for (uint64_t i = 0; i < 4; ++i) {
    TokenizedItem item;
    item.context = sample_ids(3 + 4 * i, 17, 20 + i);  // different lengths: padded batches
    for (uint64_t c = 0; c < 3; ++c) {
      item.continuations.push_back(sample_ids(1 + (i + c) % 3, 17, 40 + 3 * i + c));
      item.continuation_bytes.push_back(int64_t(2 + c));
    }
    item.gold = int64_t(i % 3);
    items.push_back(item);
  }
  const int64_t max_length = 9;  // the longer items lose context from the left
  MultipleChoiceOptions options;
  options.max_length = max_length;
  options.batch = 5;
  const MultipleChoiceResult batched = evaluate_multiple_choice(*model, items, options);
  options.batch = 1;
  const MultipleChoiceResult single = evaluate_multiple_choice(*model, items, options);
  int64_t correct = 0, correct_norm = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    size_t best = 0, best_norm = 0;
    std::vector<double> expected;
    for (size_t c = 0; c < 3; ++c) {
      std::vector<uint32_t> tokens = items[i].context;
      tokens.insert(tokens.end(), items[i].continuations[c].begin(), items[i].continuations[c].end());
      if (tokens.size() > size_t(max_length + 1)) tokens.erase(tokens.begin(), tokens.end() - (max_length + 1));
      const std::vector<double> logprobs = token_logprobs(*model, tokens);
      double sum = 0;
      for (size_t t = logprobs.size() - items[i].continuations[c].size(); t < logprobs.size(); ++t) sum += logprobs[t];
      expected.push_back(sum);
      EXPECT_NEAR(batched.scores[i][c].loglikelihood, sum, 1e-5 + 1e-5 * std::abs(sum)) << "item " << i << " choice " << c;
      EXPECT_NEAR(single.scores[i][c].loglikelihood, sum, 1e-5 + 1e-5 * std::abs(sum)) << "item " << i << " choice " << c;
      if (sum > expected[best]) best = c;
      if (sum / double(2 + c) > expected[best_norm] / double(2 + best_norm)) best_norm = c;
    }
    EXPECT_EQ(batched.predicted[i], int64_t(best));
    EXPECT_EQ(batched.predicted_norm[i], int64_t(best_norm));
    correct += int64_t(best) == items[i].gold;
    correct_norm += int64_t(best_norm) == items[i].gold;
  }
  EXPECT_DOUBLE_EQ(batched.acc, double(correct) / 4.0);
  EXPECT_DOUBLE_EQ(batched.acc_norm, double(correct_norm) / 4.0);
}

TEST(InferMultipleChoice, JsonlErrorsNameTheLine) {
  std::istringstream good("{\"context\": \"a b\", \"choices\": [\" c\", \" d\"], \"gold\": 1}\n\n"
                          "{\"context\": \"\", \"choices\": [\"x\"], \"gold\": 0}\n");
  const std::vector<ChoiceItem> items = parse_choice_jsonl(good, "good.jsonl");
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].context, "a b");
  EXPECT_EQ(items[0].choices, (std::vector<std::string>{" c", " d"}));
  EXPECT_EQ(items[0].gold, 1);
  EXPECT_EQ(items[1].line, 3);  // the blank line counts

  const std::string valid = "{\"context\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 0}\n";
  auto error_for = [&](const std::string& bad_line) {
    std::istringstream in(valid + valid + bad_line + "\n" + valid);
    return error_of([&] { parse_choice_jsonl(in, "set.jsonl"); });
  };
  for (const std::string& bad : {std::string("{\"context\": \"q\", \"choices\": [\"a\"], \"gold\": "),
                                 std::string("{\"context\": \"q\", \"gold\": 0}"),
                                 std::string("{\"context\": \"q\", \"choices\": [\"a\", 3], \"gold\": 0}"),
                                 std::string("{\"context\": \"q\", \"choices\": [\"a\", \"b\"], \"gold\": 2}"),
                                 std::string("[1, 2]")}) {
    const std::string message = error_for(bad);
    EXPECT_EQ(message.rfind("set.jsonl:3: ", 0), 0u) << bad << " -> " << message;
  }
  std::istringstream empty("\n\n");
  EXPECT_NE(error_of([&] { parse_choice_jsonl(empty, "empty.jsonl"); }).find("no items"), std::string::npos);
}

// A byte-level tokenizer: token i is byte i, no merges, <|endoftext|> = 256.
Tokenizer byte_tokenizer() {
  std::vector<std::string> bytes;
  for (int b = 0; b < 256; ++b) bytes.emplace_back(1, char(b));
  return Tokenizer::from_ranks(bytes, {{"<|endoftext|>", 256}});
}

TEST(InferMultipleChoice, TokenizesLikeTheHarness) {
  const Tokenizer tokenizer = byte_tokenizer();
  const TokenizedItem item = tokenize_item({"The cat ", {"sat", "ran away"}, 1, 1}, tokenizer);
  EXPECT_EQ(item.context, tokenizer.encode("The cat"));  // the trailing space moves to the choices
  EXPECT_EQ(item.continuations[0], tokenizer.encode(" sat"));
  EXPECT_EQ(item.continuations[1], tokenizer.encode(" ran away"));
  EXPECT_EQ(item.continuation_bytes, (std::vector<int64_t>{3, 8}));
  const TokenizedItem no_context = tokenize_item({"", {"go"}, 0, 2}, tokenizer);
  EXPECT_EQ(no_context.context, std::vector<uint32_t>{256});
  EXPECT_EQ(no_context.continuations[0], tokenizer.encode("go"));
}

TEST(InferNeedle, PromptPlacesTheNeedleAtItsDepth) {
  const Tokenizer tokenizer = byte_tokenizer();
  const std::vector<uint32_t> haystack = tokenizer.encode("Grass grows. Rivers run to the sea. ");
  const Needle needle = draw_needle(42, 3);
  EXPECT_EQ(needle.number.size(), 7u);
  EXPECT_EQ(needle.number.find_first_not_of("0123456789"), std::string::npos);
  EXPECT_NE(needle.number[0], '0');
  EXPECT_NE(std::find(needle_cities().begin(), needle_cities().end(), needle.city), needle_cities().end());
  EXPECT_EQ(draw_needle(42, 3).number, needle.number);  // seeded
  std::map<std::string, int> numbers;
  for (uint64_t t = 0; t < 20; ++t) ++numbers[draw_needle(42, t).number];
  EXPECT_GT(numbers.size(), 15u);

  const std::string sentence = " " + needle_sentence(needle);
  const std::string question = "\nWhat is the special magic " + needle.city + " number? The special magic " +
                               needle.city + " number is:";
  EXPECT_EQ(sentence, " The special magic " + needle.city + " number is: " + needle.number + ".");
  const int64_t length = 300;
  const int64_t filler = length - int64_t(sentence.size() + question.size());
  for (double depth : {0.0, 0.3, 1.0}) {
    const NeedlePrompt prompt = build_needle_prompt(haystack, needle, depth, length, tokenizer);
    ASSERT_EQ(int64_t(prompt.tokens.size()), length);
    EXPECT_EQ(prompt.needle_begin, std::llround(depth * double(filler)));
    const std::string text = tokenizer.decode(prompt.tokens);
    EXPECT_EQ(text.substr(size_t(prompt.needle_begin), sentence.size()), sentence) << depth;
    EXPECT_EQ(text.substr(text.size() - question.size()), question) << depth;
    // The haystack before the needle is the filler from its start; after it, the filler goes on.
    const std::string filler_text = tokenizer.decode(haystack);
    EXPECT_EQ(text.substr(0, std::min<size_t>(size_t(prompt.needle_begin), 20)),
              filler_text.substr(0, std::min<size_t>(size_t(prompt.needle_begin), 20)));
  }
  EXPECT_NE(error_of([&] { build_needle_prompt(haystack, needle, 0.5, 60, tokenizer); }).find("cannot hold"),
            std::string::npos);
  EXPECT_TRUE(needle_found(" " + needle.number + ".", needle));
  EXPECT_FALSE(needle_found(" " + needle.number.substr(0, 6) + " ", needle));
}

TEST(InferNeedle, GridScoresWhatTheGeneratorRetrieves) {
  const Tokenizer tokenizer = byte_tokenizer();
  const std::vector<uint32_t> haystack = tokenizer.encode("Clouds drift over hills. ");
  NeedleOptions options;
  options.lengths = {200, 260};
  options.depths = {0, 0.5, 1};
  options.trials = 3;
  options.batch = 2;
  options.seed = 9;
  // Reads the number after "number is: " when the needle lies in the prompt's first half (a reader
  // with a short memory), else answers a wrong number.
  int64_t calls = 0;
  auto generate = [&](const std::vector<std::vector<uint32_t>>& prompts, int64_t count) {
    ++calls;
    std::vector<std::vector<uint32_t>> answers;
    for (const std::vector<uint32_t>& prompt : prompts) {
      const std::string text = tokenizer.decode(prompt);
      const size_t at = text.find("number is: ");
      const bool near = at != std::string::npos && double(at) < 0.5 * double(text.size());
      answers.push_back(tokenizer.encode(near ? " " + text.substr(at + 11, 7) : std::string(" 0000000")));
      EXPECT_EQ(count, options.answer_tokens);
    }
    return answers;
  };
  const std::vector<NeedleCell> cells = run_needle_grid(haystack, tokenizer, options, generate);
  ASSERT_EQ(cells.size(), 6u);
  EXPECT_EQ(calls, 6 * 2);  // 3 trials in batches of 2 per cell
  for (const NeedleCell& cell : cells) {
    EXPECT_EQ(cell.trials, 3);
    EXPECT_EQ(cell.correct, cell.depth <= 0.5 ? 3 : 0) << cell.length << " " << cell.depth;
  }
  const std::string table = needle_table(cells, options);
  EXPECT_NE(table.find("100.0%"), std::string::npos) << table;
  EXPECT_NE(table.find("    0.0%"), std::string::npos) << table;
}

TEST(InferModelLoader, WeightsMustMatchTheConfigExactly) {
  auto source = random_model("MTH", 13, 3);
  auto target = random_model("MTH", 13, 4);
  NamedTensors tensors;
  for (const Parameter& parameter : source->named_parameters()) tensors.emplace_back(parameter.name, parameter.variable->value);
  load_weights(*target, tensors, "ok.safetensors");
  const std::vector<Parameter> loaded = target->named_parameters();
  for (size_t i = 0; i < loaded.size(); ++i)
    EXPECT_EQ(loaded[i].variable->value.to_doubles(), tensors[i].second.to_doubles()) << loaded[i].name;

  NamedTensors missing(tensors.begin() + 1, tensors.end());
  EXPECT_NE(error_of([&] { load_weights(*target, missing, "m.safetensors"); }).find("has no tensor " + tensors[0].first),
            std::string::npos);
  NamedTensors reshaped = tensors;
  reshaped[2].second = Tensor::zeros({3, 5}, DType::f32);
  const std::string shape = error_of([&] { load_weights(*target, reshaped, "s.safetensors"); });
  EXPECT_NE(shape.find(tensors[2].first + " has shape [3, 5]"), std::string::npos) << shape;
  NamedTensors extra = tensors;
  extra.emplace_back("layers.9.mixer.q.weight", Tensor::zeros({2}, DType::f32));
  const std::string unknown = error_of([&] { load_weights(*target, extra, "u.safetensors"); });
  EXPECT_NE(unknown.find("layers.9.mixer.q.weight is not part of the model"), std::string::npos) << unknown;
}

}  // namespace
}  // namespace braid::infer
