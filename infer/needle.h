// Needle in a haystack (MODEL.md section 9, the paper's protocol): the needle "The special magic
// {city} number is: {7-digit number}." is inserted at a depth (a fraction of the haystack) into
// filler text, followed by the question "What is the special magic {city} number?" and the answer
// prefix "The special magic {city} number is:"; the model continues greedily, and a trial is correct
// when the continuation contains the number. Each cell of the grid (prompt length x depth) runs N
// trials with seeded random cities and numbers.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tools/tokenizer.h"

namespace braid::infer {

struct Needle {
  std::string city;
  std::string number;  // 7 digits
};

// The cities needles are drawn from.
const std::vector<std::string>& needle_cities();
// The needle of `trial` under `seed`: a city from a fixed list and a number in [1000000, 9999999].
Needle draw_needle(uint64_t seed, uint64_t trial);
std::string needle_sentence(const Needle& needle);  // "The special magic Paris number is: 1234567."
std::string question_text(const Needle& needle);    // question, then the answer prefix

struct NeedlePrompt {
  std::vector<uint32_t> tokens;  // exactly the requested length
  int64_t needle_begin = 0;      // token index where the needle sentence starts
  int64_t needle_tokens = 0;
};

// A prompt of `length` tokens: haystack tokens (the filler repeated as needed), the needle's tokens
// inserted after the fraction `depth` of the haystack part, then the question's. Raises braid::Error
// when the needle and question alone do not fit `length`.
NeedlePrompt build_needle_prompt(const std::vector<uint32_t>& haystack, const Needle& needle, double depth,
                                 int64_t length, const Tokenizer& tokenizer);

// Whether the generated text holds the needle's number.
bool needle_found(const std::string& generated, const Needle& needle);

struct NeedleOptions {
  std::vector<int64_t> lengths;  // prompt lengths in tokens
  std::vector<double> depths;    // fractions in [0, 1]
  int64_t trials = 10;           // per cell
  int64_t answer_tokens = 12;    // greedy tokens generated per trial
  int64_t batch = 1;             // trials generated together
  uint64_t seed = 0;
};

struct NeedleCell {
  int64_t length = 0;
  double depth = 0;
  int64_t correct = 0, trials = 0;
  double accuracy() const { return trials ? double(correct) / double(trials) : 0; }
  std::string example;  // the first trial's generated text
};

// Greedy continuation of `count` tokens after each prompt (the prompts of one call have one length).
using GreedyGenerator =
    std::function<std::vector<std::vector<uint32_t>>(const std::vector<std::vector<uint32_t>>& prompts, int64_t count)>;

// The grid, cell by cell (lengths outer, depths inner); `progress(cells done, cells)` after each.
std::vector<NeedleCell> run_needle_grid(const std::vector<uint32_t>& haystack, const Tokenizer& tokenizer,
                                        const NeedleOptions& options, const GreedyGenerator& generate,
                                        const std::function<void(int64_t, int64_t)>& progress = {});

// A text table: one row per length, one column per depth, accuracies in percent.
std::string needle_table(const std::vector<NeedleCell>& cells, const NeedleOptions& options);

}  // namespace braid::infer
