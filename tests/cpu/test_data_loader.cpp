// DataLoader: rows are stride-T windows of T+1 tokens found directly in the shards' tokens; the
// seeded order is reproducible; ranks are disjoint and match one rank with the whole batch; resume
// reproduces the following batches; bad ids and vocabulary mismatches give one clear message.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "runtime/error.h"
#include "runtime/token_shard.h"
#include "train/data_loader.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using testing::error_of;
using testing::sample_ids;

namespace fs = std::filesystem;

constexpr int64_t kVocab = 5000;
constexpr int64_t kT = 8;

using Row = std::vector<uint32_t>;  // T+1 tokens: the inputs, then the last target

class DataLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("braid_data_loader_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // 101 tokens: rows at 0, 8, ..., 88 (12); 57: 7 rows; 5: none (shorter than T+1); 72: 8 rows.
    const size_t sizes[] = {101, 57, 5, 72};
    for (size_t s = 0; s < 4; ++s) {
      shard_tokens_.push_back(sample_ids(sizes[s], kVocab, s + 1));
      write_token_shard(path("part_" + std::to_string(s) + ".bin"), shard_tokens_.back());
    }
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  DataLoaderOptions options(int64_t batch, uint64_t seed = 7, int64_t rank = 0, int64_t world = 1) const {
    DataLoaderOptions o;
    o.shards = {path("part_*.bin")};
    o.batch_size = batch;
    o.seq_len = kT;
    o.vocab_size = kVocab;
    o.seed = seed;
    o.rank = rank;
    o.world_size = world;
    return o;
  }

  // Every (shard, start) window the loader may return, found from the tokens written.
  std::map<Row, std::pair<size_t, size_t>> all_windows() const {
    std::map<Row, std::pair<size_t, size_t>> windows;
    for (size_t s = 0; s < shard_tokens_.size(); ++s)
      for (size_t start = 0; start + kT + 1 <= shard_tokens_[s].size(); start += kT)
        windows[Row(shard_tokens_[s].begin() + ptrdiff_t(start),
                    shard_tokens_[s].begin() + ptrdiff_t(start + kT + 1))] = {s, start};
    return windows;
  }

  fs::path dir_;
  std::vector<std::vector<uint32_t>> shard_tokens_;
};

// The rows of a batch, each checked to be inputs + one target with targets = inputs shifted by one.
std::vector<Row> rows_of(const Batch& batch) {
  const int64_t B = batch.inputs.size(0), T = batch.inputs.size(1);
  EXPECT_EQ(batch.inputs.shape(), batch.targets.shape());
  const uint32_t* inputs = batch.inputs.data<uint32_t>();
  const uint32_t* targets = batch.targets.data<uint32_t>();
  std::vector<Row> rows;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t + 1 < T; ++t) EXPECT_EQ(targets[b * T + t], inputs[b * T + t + 1]);
    Row row(inputs + b * T, inputs + (b + 1) * T);
    row.push_back(targets[b * T + T - 1]);
    rows.push_back(row);
  }
  return rows;
}

std::vector<Row> take_rows(DataLoader& loader, int64_t steps) {
  std::vector<Row> rows;
  for (int64_t s = 0; s < steps; ++s)
    for (Row& row : rows_of(loader.next())) rows.push_back(std::move(row));
  return rows;
}

TEST_F(DataLoaderTest, CountsRowsAndTokens) {
  DataLoader loader(options(2));
  EXPECT_EQ(loader.shard_paths().size(), 4u);
  EXPECT_EQ(loader.shard_paths()[0], path("part_0.bin"));
  EXPECT_EQ(loader.shard_paths()[3], path("part_3.bin"));
  EXPECT_EQ(loader.tokens(), 101u + 57 + 5 + 72);
  EXPECT_EQ(loader.rows(), 12u + 7 + 0 + 8);
  EXPECT_EQ(loader.batches_per_epoch(), 13u);  // 27 rows / 2, one row left over
}

TEST_F(DataLoaderTest, EveryRowIsAWindowAndAnEpochVisitsEachOnce) {
  const auto windows = all_windows();
  ASSERT_EQ(windows.size(), 27u);
  DataLoader loader(options(1));
  std::set<std::pair<size_t, size_t>> seen;
  for (const Row& row : take_rows(loader, 27)) {
    auto found = windows.find(row);
    ASSERT_NE(found, windows.end()) << "a row is not a stride-T window of any shard";
    EXPECT_TRUE(seen.insert(found->second).second) << "row at shard " << found->second.first << ", token "
                                                   << found->second.second << " came twice in one epoch";
  }
  EXPECT_EQ(seen.size(), 27u);
  EXPECT_EQ(loader.state(), (DataLoader::Position{0, 27}));
  loader.next();
  EXPECT_EQ(loader.state(), (DataLoader::Position{1, 1}));
}

TEST_F(DataLoaderTest, UnshuffledOrderIsFileOrder) {
  DataLoaderOptions o = options(3);
  o.shuffle = false;
  DataLoader loader(o);
  std::vector<Row> expected;
  for (const auto& tokens : shard_tokens_)
    for (size_t start = 0; start + kT + 1 <= tokens.size(); start += kT)
      expected.emplace_back(tokens.begin() + ptrdiff_t(start), tokens.begin() + ptrdiff_t(start + kT + 1));
  EXPECT_EQ(take_rows(loader, 9), expected);
  EXPECT_EQ(take_rows(loader, 1), std::vector<Row>(expected.begin(), expected.begin() + 3));  // epoch 1
}

TEST_F(DataLoaderTest, OrderIsReproducibleAndDependsOnSeedAndEpoch) {
  DataLoader first(options(3, 11)), again(options(3, 11)), other(options(3, 12));
  std::vector<Row> epoch0 = take_rows(first, 9), epoch1 = take_rows(first, 9);
  EXPECT_EQ(take_rows(again, 18), [&] {
    std::vector<Row> both = epoch0;
    both.insert(both.end(), epoch1.begin(), epoch1.end());
    return both;
  }());
  EXPECT_NE(take_rows(other, 9), epoch0);
  EXPECT_NE(epoch1, epoch0);
  EXPECT_EQ(std::set<Row>(epoch0.begin(), epoch0.end()), std::set<Row>(epoch1.begin(), epoch1.end()));
}

TEST_F(DataLoaderTest, RanksAreDisjointAndMatchOneRankWithTheWholeBatch) {
  DataLoader single(options(4)), rank0(options(2, 7, 0, 2)), rank1(options(2, 7, 1, 2));
  EXPECT_EQ(rank0.batches_per_epoch(), single.batches_per_epoch());
  std::set<Row> rows0, rows1;
  for (uint64_t step = 0; step < 2 * single.batches_per_epoch(); ++step) {
    std::vector<Row> whole = rows_of(single.next()), part0 = rows_of(rank0.next()), part1 = rows_of(rank1.next());
    // Rank r takes the r-th block of the step's rows.
    EXPECT_EQ(part0, (std::vector<Row>{whole[0], whole[1]})) << "step " << step;
    EXPECT_EQ(part1, (std::vector<Row>{whole[2], whole[3]})) << "step " << step;
    if (step < single.batches_per_epoch()) {
      rows0.insert(part0.begin(), part0.end());
      rows1.insert(part1.begin(), part1.end());
    }
  }
  for (const Row& row : rows0) EXPECT_EQ(rows1.count(row), 0u) << "a row went to both ranks in one epoch";
  EXPECT_EQ(rows0.size() + rows1.size(), 24u);  // 6 steps x 4 rows
}

TEST_F(DataLoaderTest, ResumeReproducesTheFollowingBatches) {
  for (int64_t consumed : {0, 5, 9, 13}) {  // within the first epoch, at its end, inside the second
    DataLoader running(options(3, 5));
    take_rows(running, consumed);
    const DataLoader::Position position = running.state();
    DataLoader resumed(options(3, 5));
    resumed.seek(position);
    EXPECT_EQ(take_rows(resumed, 12), take_rows(running, 12)) << "resumed after " << consumed << " steps";
  }
}

TEST_F(DataLoaderTest, PositionResumesUnderAnotherWorldSize) {
  DataLoader single(options(4, 3));
  take_rows(single, 4);
  const DataLoader::Position position = single.state();
  DataLoader rank0(options(2, 3, 0, 2)), rank1(options(2, 3, 1, 2));
  rank0.seek(position);
  rank1.seek(position);
  for (int step = 0; step < 5; ++step) {
    std::vector<Row> whole = rows_of(single.next()), part0 = rows_of(rank0.next()), part1 = rows_of(rank1.next());
    EXPECT_EQ(part0, (std::vector<Row>{whole[0], whole[1]}));
    EXPECT_EQ(part1, (std::vector<Row>{whole[2], whole[3]}));
  }
}

TEST_F(DataLoaderTest, TokenIdAtOrAboveVocabNamesShardPositionAndId) {
  std::vector<uint32_t> tokens = sample_ids(40, kVocab, 9);
  tokens[23] = kVocab + 17;
  write_token_shard(path("part_2.bin"), tokens);
  EXPECT_EQ(error_of([&] { DataLoader loader(options(2)); }),
            path("part_2.bin") + ": token id 5017 at position 23 is not below the vocabulary size 5000");
}

TEST_F(DataLoaderTest, MetaVocabularyMustMatchTheModel) {
  std::ofstream(path("meta.json")) << R"({"vocab_size": 50257, "bos_id": 50256})";
  EXPECT_EQ(error_of([&] { DataLoader loader(options(2)); }),
            path("meta.json") + ": the shards were prepared for a vocabulary of 50257 ids, but the model's "
                                "vocab_size is 5000");
  std::ofstream(path("meta.json")) << R"({"vocab_size": 5000})";
  EXPECT_NO_THROW(DataLoader loader(options(2)));
  std::ofstream(path("meta.json")) << R"({"vocab": 5000})";
  EXPECT_EQ(error_of([&] { DataLoader loader(options(2)); }),
            path("meta.json") + ": not a shard description with an integer \"vocab_size\"");
}

TEST_F(DataLoaderTest, BadShardListsAndSizes) {
  DataLoaderOptions o = options(2);
  o.shards = {path("nothing_*.bin")};
  EXPECT_EQ(error_of([&] { DataLoader loader(o); }), "no token shard matches '" + path("nothing_*.bin") + "'");
  o.shards = {path("part_2.bin")};  // 5 tokens: no row of 9
  EXPECT_EQ(error_of([&] { DataLoader loader(o); }),
            "data loader: no shard of " + path("part_2.bin") + " holds a row of T+1 = 9 tokens (5 tokens in all)");
  o = options(28);  // 27 rows
  EXPECT_EQ(error_of([&] { DataLoader loader(o); }),
            "data loader: the shards hold 27 rows of T+1 = 9 tokens, fewer than one step of batch size 28 x 1 ranks");
  o = options(2, 7, 2, 2);
  EXPECT_EQ(error_of([&] { DataLoader loader(o); }), "data loader: rank 2 is outside a world of 2 ranks");
  DataLoader loader(options(2));
  EXPECT_EQ(error_of([&] { loader.seek({0, 28}); }),
            "data loader: resume position 28 of epoch 0 lies beyond the 27 rows of an epoch");
}

TEST_F(DataLoaderTest, BatchesAreU32Tensors) {
  DataLoader loader(options(3));
  Batch batch = loader.next();
  EXPECT_EQ(batch.inputs.dtype(), DType::u32);
  EXPECT_EQ(batch.inputs.shape(), (Shape{3, kT}));
  EXPECT_EQ(batch.targets.shape(), (Shape{3, kT}));
}

}  // namespace
}  // namespace braid
