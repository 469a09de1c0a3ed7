// Token shards (DESIGN.md "File formats"): a 1024-byte header of 256 little-endian int32 ([0] magic
// 20240520, [1] version: 1 = uint16 tokens, 2 = uint32 tokens, [2] token count, rest 0), then the
// tokens. This is the layout of llm.c's preparation scripts, so their shards load unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace braid {

inline constexpr int32_t kTokenShardMagic = 20240520;
inline constexpr size_t kTokenShardHeaderBytes = 1024;
inline constexpr int32_t kTokenShardVersionU16 = 1;
inline constexpr int32_t kTokenShardVersionU32 = 2;

// Writes `tokens` to `path` as uint16 when every id is below 65536, else as uint32. The file is
// written under a temporary name and renamed into place, so a crash never leaves a half shard.
void write_token_shard(const std::string& path, std::span<const uint32_t> tokens);

// A shard mapped read-only into memory. `open` checks the header and that the file size is exactly
// header + count tokens; every failure raises braid::Error naming the file. Copies share the mapping.
class TokenShard {
 public:
  static TokenShard open(const std::string& path);

  const std::string& path() const { return path_; }
  int32_t version() const { return version_; }  // kTokenShardVersionU16 or kTokenShardVersionU32
  size_t size() const { return size_; }         // token count

  uint32_t operator[](size_t index) const {
    return version_ == kTokenShardVersionU16 ? static_cast<const uint16_t*>(tokens_)[index]
                                             : static_cast<const uint32_t*>(tokens_)[index];
  }
  // Copies tokens [start, start + count) into `out`; the range must lie inside the shard.
  void copy(size_t start, size_t count, uint32_t* out) const;
  std::vector<uint32_t> tokens() const;
  // Raises braid::Error naming the file, the position and the id of the first token >= vocab_size.
  void check_ids_below(size_t vocab_size) const;

 private:
  struct Mapping;
  std::shared_ptr<const Mapping> mapping_;
  std::string path_;
  int32_t version_ = kTokenShardVersionU16;
  size_t size_ = 0;
  const void* tokens_ = nullptr;
};

}  // namespace braid
