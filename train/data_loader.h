// The training data loader (DESIGN.md "Data and tokenizer"): rows of T+1 consecutive tokens from
// token shards, in a seeded order, split disjointly across ranks, resumable at an exact position.
//
// Rows: in a shard of n tokens, row k covers tokens [k*T, k*T + T + 1) for every k with
// k*T + T + 1 <= n (llm.c's stride T with T+1 reads): inputs are its first T tokens, targets its last
// T, so every token after a shard's first is a target exactly once per epoch. Rows never cross shards.
// Order: rows are numbered shard by shard (shards in the order given; each glob's matches sorted);
// each epoch visits them in a Fisher-Yates permutation drawn from the Philox stream keyed by the seed,
// with the epoch in the counter, so every epoch has its own order and every rank computes the same one.
// Ranks: global step s takes positions [s*B*W, (s+1)*B*W) of the epoch's order, rank r the block
// s*B*W + r*B + j for j < B: ranks are disjoint, and rank r's batch s is exactly the batch s*W + r of
// one rank with batch B, so W ranks with A micro-batches each see the micro-batches of one rank
// with W*A (data parallelism then matches one rank up to the order gradients are summed in).
// An epoch ends when fewer than B*W rows are left (so every rank takes the same number of steps).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tensor.h"
#include "runtime/token_shard.h"

namespace braid {

struct DataLoaderOptions {
  std::vector<std::string> shards;  // shard paths or glob patterns (each pattern must match a file)
  int64_t batch_size = 0;           // B: rows per rank per batch
  int64_t seq_len = 0;              // T
  int64_t vocab_size = 0;           // the model's: every token id must be below it
  uint64_t seed = 0;
  int64_t rank = 0;
  int64_t world_size = 1;
  bool shuffle = true;  // false: rows in file order every epoch (evaluation)
};

struct Batch {
  Tensor inputs;   // u32 [B, T]
  Tensor targets;  // u32 [B, T]: row b's tokens 1..T, where inputs holds tokens 0..T-1
};

class DataLoader {
 public:
  // Where the next batch comes from. `index` counts the rows of this epoch's order consumed by all
  // ranks together, so a position saved by one world size resumes under another.
  struct Position {
    uint64_t epoch = 0;
    uint64_t index = 0;
    bool operator==(const Position&) const = default;
  };

  // Opens and checks every shard: header and size, every token id below options.vocab_size, and
  // the "vocab_size" of a meta.json beside the shards (written by prepare_data) equal to it.
  explicit DataLoader(DataLoaderOptions options);

  Batch next();
  Position state() const { return position_; }
  void seek(const Position& position);

  const std::vector<std::string>& shard_paths() const { return shard_paths_; }
  uint64_t tokens() const { return tokens_; }               // in all shards
  uint64_t rows() const { return row_offsets_.back(); }     // rows of T+1 tokens in all shards
  uint64_t batches_per_epoch() const { return rows() / rows_per_step_; }

 private:
  void shuffle_for(uint64_t epoch);
  // Copies the T+1 tokens of global row `row` into `out`.
  void read_row(uint64_t row, uint32_t* out) const;

  DataLoaderOptions options_;
  std::vector<std::string> shard_paths_;
  std::vector<TokenShard> shards_;
  std::vector<uint64_t> row_offsets_;  // shard i holds global rows [row_offsets_[i], row_offsets_[i+1])
  uint64_t tokens_ = 0;
  uint64_t rows_per_step_ = 0;         // B * world_size
  Position position_;
  uint64_t order_epoch_ = 0;
  std::vector<uint64_t> order_;        // this epoch's permutation of global rows (empty: file order)
};

}  // namespace braid
