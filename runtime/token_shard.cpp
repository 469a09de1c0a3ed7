#include "runtime/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "runtime/error.h"

namespace braid {

static_assert(std::endian::native == std::endian::little, "token shards are read in place as little-endian");

namespace {

const char* version_name(int32_t version) {
  return version == kTokenShardVersionU16 ? "uint16" : "uint32";
}

size_t token_bytes(int32_t version) { return version == kTokenShardVersionU16 ? 2 : 4; }

template <typename Token>
void scan_for_id_at_or_above(const Token* tokens, size_t count, size_t vocab_size, size_t& first_bad) {
  // Chunks scanned in parallel; the smallest bad position wins, so the report does not depend on threads.
  constexpr size_t kChunk = size_t(1) << 20;
  const int64_t chunks = int64_t((count + kChunk - 1) / kChunk);
  std::vector<size_t> chunk_first_bad(size_t(chunks), count);
#pragma omp parallel for schedule(static)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    size_t end = std::min(count, size_t(chunk + 1) * kChunk);
    for (size_t i = size_t(chunk) * kChunk; i < end; ++i) {
      if (size_t(tokens[i]) >= vocab_size) {
        chunk_first_bad[size_t(chunk)] = i;
        break;
      }
    }
  }
  first_bad = count;
  for (size_t bad : chunk_first_bad) first_bad = std::min(first_bad, bad);
}

}  // namespace

void write_token_shard(const std::string& path, std::span<const uint32_t> tokens) {
  BRAID_CHECK(tokens.size() <= size_t(std::numeric_limits<int32_t>::max()), path, ": ", tokens.size(),
              " tokens do not fit one shard (the header's count is an int32; at most ",
              std::numeric_limits<int32_t>::max(), ")");
  const bool fits_u16 = std::all_of(tokens.begin(), tokens.end(), [](uint32_t id) { return id < 65536; });
  int32_t header[kTokenShardHeaderBytes / sizeof(int32_t)] = {};
  header[0] = kTokenShardMagic;
  header[1] = fits_u16 ? kTokenShardVersionU16 : kTokenShardVersionU32;
  header[2] = int32_t(tokens.size());

  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    BRAID_CHECK(out.good(), temporary, ": cannot open for writing: ", std::strerror(errno));
    out.write(reinterpret_cast<const char*>(header), sizeof(header));
    if (fits_u16) {
      std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
      out.write(reinterpret_cast<const char*>(narrow.data()), std::streamsize(narrow.size() * 2));
    } else {
      out.write(reinterpret_cast<const char*>(tokens.data()), std::streamsize(tokens.size() * 4));
    }
    out.close();
    BRAID_CHECK(!out.fail(), temporary, ": write failed: ", std::strerror(errno));
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  BRAID_CHECK(!error, "cannot rename ", temporary, " to ", path, ": ", error.message());
}

struct TokenShard::Mapping {
  void* address = nullptr;
  size_t bytes = 0;
  ~Mapping() {
    if (address) munmap(address, bytes);
  }
};

TokenShard TokenShard::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  BRAID_CHECK(fd >= 0, path, ": cannot open token shard: ", std::strerror(errno));
  struct stat info{};
  if (fstat(fd, &info) != 0) {
    int saved = errno;
    ::close(fd);
    BRAID_FAIL(path, ": cannot stat token shard: ", std::strerror(saved));
  }
  const size_t file_bytes = size_t(info.st_size);
  if (file_bytes < kTokenShardHeaderBytes) {
    ::close(fd);
    BRAID_FAIL(path, ": file is ", file_bytes, " bytes, shorter than the ", kTokenShardHeaderBytes,
               "-byte token shard header");
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->address = mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  int saved = errno;
  ::close(fd);  // the mapping stays valid after the descriptor is closed
  BRAID_CHECK(mapping->address != MAP_FAILED, path, ": cannot map token shard: ", std::strerror(saved));
  mapping->bytes = file_bytes;

  int32_t header[3];
  std::memcpy(header, mapping->address, sizeof(header));
  BRAID_CHECK(header[0] == kTokenShardMagic, path, ": shard header magic is ", header[0], ", expected ",
              kTokenShardMagic);
  BRAID_CHECK(header[1] == kTokenShardVersionU16 || header[1] == kTokenShardVersionU32, path,
              ": shard header version is ", header[1], ", expected ", kTokenShardVersionU16,
              " (uint16 tokens) or ", kTokenShardVersionU32, " (uint32 tokens)");
  BRAID_CHECK(header[2] >= 0, path, ": shard header token count is ", header[2]);
  const size_t expected_bytes = kTokenShardHeaderBytes + size_t(header[2]) * token_bytes(header[1]);
  BRAID_CHECK(file_bytes >= expected_bytes, path, ": truncated shard: the header says ", header[2], " ",
              version_name(header[1]), " tokens (", expected_bytes, " bytes with the header) but the file is ",
              file_bytes, " bytes");
  BRAID_CHECK(file_bytes == expected_bytes, path, ": trailing bytes after the tokens: the header says ",
              header[2], " ", version_name(header[1]), " tokens (", expected_bytes,
              " bytes with the header) but the file is ", file_bytes, " bytes");

  TokenShard shard;
  shard.path_ = path;
  shard.version_ = header[1];
  shard.size_ = size_t(header[2]);
  shard.tokens_ = static_cast<const char*>(mapping->address) + kTokenShardHeaderBytes;
  shard.mapping_ = std::move(mapping);
  return shard;
}

void TokenShard::copy(size_t start, size_t count, uint32_t* out) const {
  BRAID_CHECK(start <= size_ && count <= size_ - start, path_, ": tokens [", start, ", ", start + count,
              ") lie outside the shard's ", size_, " tokens");
  if (version_ == kTokenShardVersionU16) {
    const uint16_t* tokens = static_cast<const uint16_t*>(tokens_) + start;
    std::copy(tokens, tokens + count, out);
  } else {
    const uint32_t* tokens = static_cast<const uint32_t*>(tokens_) + start;
    std::copy(tokens, tokens + count, out);
  }
}

std::vector<uint32_t> TokenShard::tokens() const {
  std::vector<uint32_t> all(size_);
  copy(0, size_, all.data());
  return all;
}

void TokenShard::check_ids_below(size_t vocab_size) const {
  size_t first_bad = size_;
  if (version_ == kTokenShardVersionU16)
    scan_for_id_at_or_above(static_cast<const uint16_t*>(tokens_), size_, vocab_size, first_bad);
  else
    scan_for_id_at_or_above(static_cast<const uint32_t*>(tokens_), size_, vocab_size, first_bad);
  BRAID_CHECK(first_bad == size_, path_, ": token id ", (*this)[first_bad], " at position ", first_bad,
              " is not below the vocabulary size ", vocab_size);
}

}  // namespace braid
