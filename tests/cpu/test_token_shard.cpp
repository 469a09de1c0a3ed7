// Token shards: round trips at both widths, a byte-exact llm.c file written by hand, and one clear
// error per malformed file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "runtime/error.h"
#include "runtime/token_shard.h"
#include "tests/test_util.h"

namespace braid {
namespace {

using testing::error_of;
using testing::sample_ids;

namespace fs = std::filesystem;

class TokenShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("braid_token_shard_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

std::vector<char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

// Header ints and raw little-endian tokens, the way llm.c's scripts write them.
template <typename Token>
void write_by_hand(const std::string& path, std::vector<int32_t> header_start, const std::vector<Token>& tokens,
                   size_t extra_bytes = 0) {
  std::vector<int32_t> header(256, 0);
  std::copy(header_start.begin(), header_start.end(), header.begin());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), 1024);
  out.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(tokens.size() * sizeof(Token)));
  for (size_t i = 0; i < extra_bytes; ++i) out.put('x');
}

TEST_F(TokenShardTest, RoundTripUint16) {
  std::vector<uint32_t> tokens = sample_ids(1001, 65535, 1);
  tokens[17] = 65535;  // the largest id that still fits uint16
  write_token_shard(path("a.bin"), tokens);

  std::vector<char> bytes = file_bytes(path("a.bin"));
  ASSERT_EQ(bytes.size(), 1024u + 2 * tokens.size());
  int32_t header[256];
  std::memcpy(header, bytes.data(), 1024);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], 1001);
  for (int i = 3; i < 256; ++i) EXPECT_EQ(header[i], 0) << "header int " << i;
  uint16_t stored;
  std::memcpy(&stored, bytes.data() + 1024 + 2 * 17, 2);
  EXPECT_EQ(stored, 65535);

  TokenShard shard = TokenShard::open(path("a.bin"));
  EXPECT_EQ(shard.version(), 1);
  EXPECT_EQ(shard.size(), tokens.size());
  EXPECT_EQ(shard.tokens(), tokens);
  EXPECT_EQ(shard[17], 65535u);
  std::vector<uint32_t> middle(5);
  shard.copy(500, 5, middle.data());
  EXPECT_EQ(middle, std::vector<uint32_t>(tokens.begin() + 500, tokens.begin() + 505));
}

TEST_F(TokenShardTest, RoundTripUint32WhenAnIdNeedsIt) {
  std::vector<uint32_t> tokens = sample_ids(777, 200000, 2);
  tokens[0] = 65536;
  tokens[776] = 4000000000u;
  write_token_shard(path("b.bin"), tokens);

  std::vector<char> bytes = file_bytes(path("b.bin"));
  ASSERT_EQ(bytes.size(), 1024u + 4 * tokens.size());
  int32_t header[3];
  std::memcpy(header, bytes.data(), sizeof(header));
  EXPECT_EQ(header[1], 2);
  EXPECT_EQ(header[2], 777);
  uint32_t last;
  std::memcpy(&last, bytes.data() + bytes.size() - 4, 4);
  EXPECT_EQ(last, 4000000000u);

  TokenShard shard = TokenShard::open(path("b.bin"));
  EXPECT_EQ(shard.version(), 2);
  EXPECT_EQ(shard.tokens(), tokens);
}

TEST_F(TokenShardTest, EmptyShardRoundTrips) {
  write_token_shard(path("empty.bin"), {});
  EXPECT_EQ(fs::file_size(path("empty.bin")), 1024u);
  EXPECT_EQ(TokenShard::open(path("empty.bin")).size(), 0u);
}

TEST_F(TokenShardTest, LlmcFileWrittenByHandLoads) {
  std::vector<uint16_t> tokens = {50256, 464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 50256};
  write_by_hand(path("llmc_val_000000.bin"), {20240520, 1, int32_t(tokens.size())}, tokens);
  TokenShard shard = TokenShard::open(path("llmc_val_000000.bin"));
  EXPECT_EQ(shard.version(), 1);
  EXPECT_EQ(shard.tokens(), std::vector<uint32_t>(tokens.begin(), tokens.end()));

  std::vector<uint32_t> wide = {70000, 5, 128255};
  write_by_hand(path("wide.bin"), {20240520, 2, 3}, wide);
  EXPECT_EQ(TokenShard::open(path("wide.bin")).tokens(), wide);
}

TEST_F(TokenShardTest, BadMagicNamesFileAndValue) {
  write_by_hand(path("magic.bin"), {12345, 1, 2}, std::vector<uint16_t>{7, 8});
  EXPECT_EQ(error_of([&] { TokenShard::open(path("magic.bin")); }),
            path("magic.bin") + ": shard header magic is 12345, expected 20240520");
}

TEST_F(TokenShardTest, BadVersionNamesFileAndValue) {
  write_by_hand(path("version.bin"), {20240520, 3, 2}, std::vector<uint16_t>{7, 8});
  EXPECT_EQ(error_of([&] { TokenShard::open(path("version.bin")); }),
            path("version.bin") +
                ": shard header version is 3, expected 1 (uint16 tokens) or 2 (uint32 tokens)");
}

TEST_F(TokenShardTest, TruncatedBodyNamesBothSizes) {
  write_by_hand(path("short.bin"), {20240520, 1, 10}, std::vector<uint16_t>{1, 2, 3, 4, 5, 6, 7});
  EXPECT_EQ(error_of([&] { TokenShard::open(path("short.bin")); }),
            path("short.bin") + ": truncated shard: the header says 10 uint16 tokens (1044 bytes with the "
                                "header) but the file is 1038 bytes");
}

TEST_F(TokenShardTest, TrailingBytesNameBothSizes) {
  write_by_hand(path("long.bin"), {20240520, 2, 3}, std::vector<uint32_t>{1, 2, 3}, 2);
  EXPECT_EQ(error_of([&] { TokenShard::open(path("long.bin")); }),
            path("long.bin") + ": trailing bytes after the tokens: the header says 3 uint32 tokens (1036 "
                               "bytes with the header) but the file is 1038 bytes");
}

TEST_F(TokenShardTest, FileShorterThanHeader) {
  std::ofstream(path("tiny.bin"), std::ios::binary) << "hello";
  EXPECT_EQ(error_of([&] { TokenShard::open(path("tiny.bin")); }),
            path("tiny.bin") + ": file is 5 bytes, shorter than the 1024-byte token shard header");
}

TEST_F(TokenShardTest, NegativeCountAndMissingFile) {
  write_by_hand(path("negative.bin"), {20240520, 1, -4}, std::vector<uint16_t>{});
  EXPECT_EQ(error_of([&] { TokenShard::open(path("negative.bin")); }),
            path("negative.bin") + ": shard header token count is -4");
  EXPECT_EQ(error_of([&] { TokenShard::open(path("missing.bin")); }),
            path("missing.bin") + ": cannot open token shard: No such file or directory");
}

TEST_F(TokenShardTest, IdCheckNamesFilePositionAndId) {
  for (uint64_t bound : {1000u, 70000u}) {  // a uint16 and a uint32 shard
    std::vector<uint32_t> tokens = sample_ids(3000, bound - 1, 3);
    tokens[1234] = tokens[2500] = uint32_t(bound - 1);  // the first is the one reported
    const std::string file = path("ids" + std::to_string(bound) + ".bin");
    write_token_shard(file, tokens);
    TokenShard shard = TokenShard::open(file);
    EXPECT_EQ(shard.version(), bound < 65536 ? 1 : 2);
    EXPECT_NO_THROW(shard.check_ids_below(bound));
    EXPECT_EQ(error_of([&] { shard.check_ids_below(bound - 1); }),
              file + ": token id " + std::to_string(bound - 1) +
                  " at position 1234 is not below the vocabulary size " + std::to_string(bound - 1));
  }
}

TEST_F(TokenShardTest, CopyOutsideShardIsAnError) {
  write_token_shard(path("c.bin"), std::vector<uint32_t>{4, 5, 6});
  std::vector<uint32_t> out(4);
  EXPECT_EQ(error_of([&] { TokenShard::open(path("c.bin")).copy(1, 3, out.data()); }),
            path("c.bin") + ": tokens [1, 4) lie outside the shard's 3 tokens");
}

}  // namespace
}  // namespace braid
