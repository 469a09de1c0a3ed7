#include "infer/needle.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "runtime/error.h"
#include "runtime/random_transform.h"

namespace braid::infer {

namespace {

const std::vector<std::string> kCities = {
    "Paris",   "Tokyo",     "Lagos",    "Lima",      "Oslo",     "Cairo",  "Delhi",    "Sydney",
    "Toronto", "Madrid",    "Nairobi",  "Santiago",  "Hanoi",    "Dublin", "Vienna",   "Bogota",
    "Seoul",   "Istanbul",  "Chicago",  "Mumbai",    "Berlin",   "Lisbon", "Helsinki", "Jakarta",
    "Manila",  "Kinshasa",  "Montreal", "Warsaw",    "Athens",   "Prague", "Havana",   "Karachi"};

// Keeps needle draws apart from other streams of the same seed.
constexpr uint64_t kNeedleStream = 0x4E45454400000000ull;  // "NEED"

}  // namespace

const std::vector<std::string>& needle_cities() { return kCities; }

Needle draw_needle(uint64_t seed, uint64_t trial) {
  const uint64_t position = kNeedleStream + 2 * trial;
  const size_t city = std::min(kCities.size() - 1, size_t(philox::uniform_at(seed, position, 0.0, double(kCities.size()))));
  const int64_t number = std::min<int64_t>(9999999, 1000000 + int64_t(philox::uniform_at(seed, position + 1, 0.0, 9000000.0)));
  return {kCities[city], std::to_string(number)};
}

std::string needle_sentence(const Needle& needle) {
  return "The special magic " + needle.city + " number is: " + needle.number + ".";
}

std::string question_text(const Needle& needle) {
  return "What is the special magic " + needle.city + " number? The special magic " + needle.city + " number is:";
}

NeedlePrompt build_needle_prompt(const std::vector<uint32_t>& haystack, const Needle& needle, double depth,
                                 int64_t length, const Tokenizer& tokenizer) {
  BRAID_CHECK(!haystack.empty(), "the haystack text has no tokens");
  BRAID_CHECK(depth >= 0 && depth <= 1, "needle depth ", depth, " is not a fraction in [0, 1]");
  const std::vector<uint32_t> needle_ids = tokenizer.encode(" " + needle_sentence(needle));
  const std::vector<uint32_t> question_ids = tokenizer.encode("\n" + question_text(needle));
  const int64_t filler = length - int64_t(needle_ids.size() + question_ids.size());
  BRAID_CHECK(filler >= 0, "a prompt of ", length, " tokens cannot hold the needle and the question (",
              needle_ids.size() + question_ids.size(), " tokens)");
  NeedlePrompt prompt;
  prompt.needle_begin = std::llround(depth * double(filler));
  prompt.needle_tokens = int64_t(needle_ids.size());
  prompt.tokens.reserve(size_t(length));
  for (int64_t i = 0; i < filler; ++i) {
    if (i == prompt.needle_begin) prompt.tokens.insert(prompt.tokens.end(), needle_ids.begin(), needle_ids.end());
    prompt.tokens.push_back(haystack[size_t(i) % haystack.size()]);
  }
  if (prompt.needle_begin == filler) prompt.tokens.insert(prompt.tokens.end(), needle_ids.begin(), needle_ids.end());
  prompt.tokens.insert(prompt.tokens.end(), question_ids.begin(), question_ids.end());
  return prompt;
}

bool needle_found(const std::string& generated, const Needle& needle) {
  return generated.find(needle.number) != std::string::npos;
}

std::vector<NeedleCell> run_needle_grid(const std::vector<uint32_t>& haystack, const Tokenizer& tokenizer,
                                        const NeedleOptions& options, const GreedyGenerator& generate,
                                        const std::function<void(int64_t, int64_t)>& progress) {
  BRAID_CHECK(!options.lengths.empty() && !options.depths.empty(), "give at least one length and one depth");
  BRAID_CHECK(options.trials > 0 && options.batch > 0 && options.answer_tokens > 0,
              "trials, batch and answer tokens must be positive");
  std::vector<NeedleCell> cells;
  const int64_t total = int64_t(options.lengths.size() * options.depths.size());
  for (int64_t length : options.lengths) {
    for (double depth : options.depths) {
      NeedleCell cell{length, depth, 0, 0, ""};
      const uint64_t first_draw = uint64_t(cells.size()) * uint64_t(options.trials);
      for (int64_t start = 0; start < options.trials; start += options.batch) {
        const int64_t count = std::min(options.batch, options.trials - start);
        std::vector<Needle> needles;
        std::vector<std::vector<uint32_t>> prompts;
        for (int64_t t = start; t < start + count; ++t) {
          needles.push_back(draw_needle(options.seed, first_draw + uint64_t(t)));
          prompts.push_back(build_needle_prompt(haystack, needles.back(), depth, length, tokenizer).tokens);
        }
        const std::vector<std::vector<uint32_t>> answers = generate(prompts, options.answer_tokens);
        BRAID_CHECK(answers.size() == prompts.size(), "the generator returned ", answers.size(), " answers for ",
                    prompts.size(), " prompts");
        for (size_t i = 0; i < answers.size(); ++i) {
          const std::string text = tokenizer.decode(answers[i]);
          if (cell.trials == 0) cell.example = text;
          cell.correct += needle_found(text, needles[i]);
          ++cell.trials;
        }
      }
      cells.push_back(cell);
      if (progress) progress(int64_t(cells.size()), total);
    }
  }
  return cells;
}

std::string needle_table(const std::vector<NeedleCell>& cells, const NeedleOptions& options) {
  std::ostringstream table;
  char field[32];
  table << "length \\ depth";
  for (double depth : options.depths) {
    std::snprintf(field, sizeof field, " %6.0f%%", depth * 100);
    table << field;
  }
  for (size_t i = 0; i < cells.size(); ++i) {
    const NeedleCell& cell = cells[i];
    if (i % options.depths.size() == 0) {
      std::snprintf(field, sizeof field, "\n%14lld", static_cast<long long>(cell.length));
      table << field;
    }
    std::snprintf(field, sizeof field, " %6.1f%%", cell.accuracy() * 100);
    table << field;
  }
  table << "\n";
  return table.str();
}

}  // namespace braid::infer
