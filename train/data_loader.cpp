#include "train/data_loader.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "runtime/error.h"
#include "runtime/philox.h"

namespace braid {

namespace {

// Keeps the data-order stream apart from the weight-initialization stream of the same seed.
constexpr uint32_t kDataOrderStream = 0x44415441;  // "DATA"

std::vector<std::string> expand_shard_list(const std::vector<std::string>& entries) {
  std::vector<std::string> paths;
  for (const std::string& entry : entries) {
    if (entry.find_first_of("*?[") == std::string::npos) {
      paths.push_back(entry);
      continue;
    }
    glob_t matches{};
    int status = glob(entry.c_str(), 0, nullptr, &matches);  // matches come sorted
    if (status == 0)
      for (size_t i = 0; i < matches.gl_pathc; ++i) paths.emplace_back(matches.gl_pathv[i]);
    globfree(&matches);
    BRAID_CHECK(status == 0, "no token shard matches '", entry, "'");
  }
  BRAID_CHECK(!paths.empty(), "data loader: no token shards given");
  return paths;
}

// prepare_data writes meta.json beside its shards; its vocab_size must be the model's.
void check_meta_vocab(const std::vector<std::string>& shard_paths, int64_t vocab_size) {
  std::set<std::filesystem::path> directories;
  for (const std::string& path : shard_paths)
    directories.insert(std::filesystem::path(path).parent_path());
  for (const std::filesystem::path& directory : directories) {
    const std::string meta_path = (directory / "meta.json").string();
    std::ifstream in(meta_path);
    if (!in) continue;
    std::stringstream text;
    text << in.rdbuf();
    nlohmann::json meta = nlohmann::json::parse(text.str(), nullptr, false);
    BRAID_CHECK(!meta.is_discarded() && meta.is_object() && meta.contains("vocab_size") &&
                    meta["vocab_size"].is_number_integer(),
                meta_path, ": not a shard description with an integer \"vocab_size\"");
    const int64_t shards_vocab = meta["vocab_size"].get<int64_t>();
    BRAID_CHECK(shards_vocab == vocab_size, meta_path, ": the shards were prepared for a vocabulary of ",
                shards_vocab, " ids, but the model's vocab_size is ", vocab_size);
  }
}

}  // namespace

DataLoader::DataLoader(DataLoaderOptions options) : options_(std::move(options)) {
  BRAID_CHECK(options_.batch_size > 0 && options_.seq_len > 0, "data loader: batch size ",
              options_.batch_size, " and sequence length ", options_.seq_len, " must be positive");
  BRAID_CHECK(options_.vocab_size > 0, "data loader: vocab_size must be positive, got ", options_.vocab_size);
  BRAID_CHECK(options_.world_size > 0 && options_.rank >= 0 && options_.rank < options_.world_size,
              "data loader: rank ", options_.rank, " is outside a world of ", options_.world_size, " ranks");
  shard_paths_ = expand_shard_list(options_.shards);
  check_meta_vocab(shard_paths_, options_.vocab_size);

  const uint64_t T = uint64_t(options_.seq_len);
  row_offsets_.push_back(0);
  for (const std::string& path : shard_paths_) {
    TokenShard shard = TokenShard::open(path);
    shard.check_ids_below(size_t(options_.vocab_size));
    tokens_ += shard.size();
    const uint64_t shard_rows = shard.size() > T ? (shard.size() - 1) / T : 0;
    row_offsets_.push_back(row_offsets_.back() + shard_rows);
    shards_.push_back(std::move(shard));
  }
  BRAID_CHECK(rows() > 0, "data loader: no shard of ", shard_paths_.front(),
              (shard_paths_.size() > 1 ? " and the others" : ""), " holds a row of T+1 = ", T + 1,
              " tokens (", tokens_, " tokens in all)");
  rows_per_step_ = uint64_t(options_.batch_size * options_.world_size);
  BRAID_CHECK(batches_per_epoch() > 0, "data loader: the shards hold ", rows(), " rows of T+1 = ", T + 1,
              " tokens, fewer than one step of batch size ", options_.batch_size, " x ",
              options_.world_size, " ranks");
  if (options_.shuffle) shuffle_for(0);
}

void DataLoader::shuffle_for(uint64_t epoch) {
  const uint64_t n = rows();
  order_.resize(n);
  for (uint64_t i = 0; i < n; ++i) order_[i] = i;
  const uint64_t seed = options_.seed;
  for (uint64_t i = n - 1; i > 0; --i) {
    philox::Block counter{{uint32_t(i), uint32_t(i >> 32), uint32_t(epoch), uint32_t(epoch >> 32) ^ kDataOrderStream}};
    philox::Block bits = philox::philox4x32_10(counter, uint32_t(seed), uint32_t(seed >> 32));
    const uint64_t random = uint64_t(bits.v[0]) | (uint64_t(bits.v[1]) << 32);
    // Uniform in [0, i]: the high word of random * (i + 1); the bias is below 2^-32 for any n here.
    const uint64_t j = uint64_t((unsigned __int128)random * (i + 1) >> 64);
    std::swap(order_[i], order_[j]);
  }
  order_epoch_ = epoch;
}

void DataLoader::read_row(uint64_t row, uint32_t* out) const {
  const size_t shard = size_t(std::upper_bound(row_offsets_.begin(), row_offsets_.end(), row) -
                              row_offsets_.begin()) - 1;
  const uint64_t start = (row - row_offsets_[shard]) * uint64_t(options_.seq_len);
  shards_[shard].copy(size_t(start), size_t(options_.seq_len) + 1, out);
}

Batch DataLoader::next() {
  if (position_.index + rows_per_step_ > rows()) position_ = Position{position_.epoch + 1, 0};
  if (options_.shuffle && order_epoch_ != position_.epoch) shuffle_for(position_.epoch);

  const int64_t B = options_.batch_size, T = options_.seq_len;
  Batch batch{Tensor::empty({B, T}, DType::u32), Tensor::empty({B, T}, DType::u32)};
  uint32_t* inputs = batch.inputs.data<uint32_t>();
  uint32_t* targets = batch.targets.data<uint32_t>();
  std::vector<uint32_t> window(size_t(T) + 1);
  for (int64_t b = 0; b < B; ++b) {
    const uint64_t slot = position_.index + uint64_t(options_.rank * B + b);
    read_row(options_.shuffle ? order_[slot] : slot, window.data());
    std::copy(window.begin(), window.end() - 1, inputs + b * T);
    std::copy(window.begin() + 1, window.end(), targets + b * T);
  }
  position_.index += rows_per_step_;
  return batch;
}

void DataLoader::seek(const Position& position) {
  BRAID_CHECK(position.index <= rows(), "data loader: resume position ", position.index,
              " of epoch ", position.epoch, " lies beyond the ", rows(), " rows of an epoch");
  position_ = position;
}

}  // namespace braid
