// safetensors: byte-exact round trips for every dtype, the writer checked against the format spec
// by a reader written here, a hand-composed file, and corruption (flipped bytes in every region,
// truncation at many lengths, malformed headers) always raising one clear error.
#include "runtime/safetensors.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace braid {
namespace {

namespace fs = std::filesystem;
using Bytes = std::string;

// A fresh directory per test, removed afterwards.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ =
        fs::temp_directory_path() / ("braid_safetensors_" + std::to_string(::getpid()) + "_" + test->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// The bytes of a contiguous host tensor.
Bytes bytes_of(const Tensor& tensor) {
  EXPECT_TRUE(tensor.is_contiguous() && tensor.device().is_cpu());
  if (tensor.numel() == 0) return {};
  return Bytes(static_cast<const char*>(tensor.raw_data()), tensor.nbytes());
}

Bytes little_endian_u64(uint64_t value) {
  Bytes bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char((value >> (8 * i)) & 0xff);
  return bytes;
}

// A complete file per the spec: length prefix, header padded with spaces to 8 bytes, data.
Bytes compose_file(std::string header, const Bytes& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return little_endian_u64(header.size()) + header + data;
}

// Bit-at-a-time CRC-32C (reflected Castagnoli polynomial), the oracle for the library's fast one.
uint32_t crc32c_bitwise(const Bytes& bytes, uint32_t crc = 0) {
  crc = ~crc;
  for (unsigned char byte : bytes) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// Loads `path` expecting braid::Error; returns its message after checking it is one line naming
// the file.
std::string load_error(const std::string& path, Checksums checksums = Checksums::required) {
  try {
    load_safetensors(path, checksums);
  } catch (const Error& error) {
    std::string message = error.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    return message;
  }
  ADD_FAILURE() << path << " loaded without an error";
  return "";
}

// One tensor of every dtype, with values that use the whole width of each (never all zeros).
NamedTensors every_dtype() {
  NamedTensors tensors;
  tensors.emplace_back("weights.f32", testing::random_normal({3, 5}, 11, DType::f32));
  tensors.emplace_back("weights.f64", testing::random_normal({7}, 12, DType::f64));
  tensors.emplace_back("weights.bf16", testing::random_normal({2, 3, 5}, 13, DType::bf16));
  Tensor i32 = Tensor::empty({4, 3}, DType::i32);
  for (int i = 0; i < 12; ++i) i32.data<int32_t>()[i] = (i % 2 ? -1 : 1) * (i * 178956970 + 3);
  tensors.emplace_back("counts.i32", i32);
  Tensor i64 = Tensor::empty({5}, DType::i64);
  for (int i = 0; i < 5; ++i) i64.data<int64_t>()[i] = (int64_t(1) << 62) / (i + 1) - i * 977;
  tensors.emplace_back("positions.i64", i64);
  Tensor u16 = Tensor::empty({9}, DType::u16);
  for (int i = 0; i < 9; ++i) u16.data<uint16_t>()[i] = uint16_t(65535 - i * 7001);
  tensors.emplace_back("tokens.u16", u16);
  Tensor u32 = Tensor::empty({2, 2}, DType::u32);
  for (int i = 0; i < 4; ++i) u32.data<uint32_t>()[i] = 4294967295u - uint32_t(i) * 123456789u;
  tensors.emplace_back("tokens.u32", u32);
  tensors.emplace_back("scalar", Tensor::from_values({2.5}, {}, DType::f32));
  tensors.emplace_back("empty", Tensor::empty({0, 4}, DType::f32));
  return tensors;
}

TEST(Safetensors, Crc32cMatchesTheStandardAndABitwiseOracle) {
  const Bytes check = "123456789";
  EXPECT_EQ(crc32c(check.data(), check.size()), 0xE3069283u);  // the published check value
  EXPECT_EQ(crc32c_bitwise(check), 0xE3069283u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  Bytes buffer = bytes_of(testing::random_uniform({4099}, 21, -1, 1, DType::f32));
  // Every start alignment and many lengths, so the byte-wise head and tail and the word loop all run.
  for (size_t start = 0; start < 9; ++start)
    for (size_t length : {0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 1000, 16000})
      EXPECT_EQ(crc32c(buffer.data() + start, length), crc32c_bitwise(buffer.substr(start, length)))
          << "start " << start << " length " << length;
  // Continuing a CRC gives the CRC of the concatenation.
  uint32_t first = crc32c(buffer.data(), 1001);
  EXPECT_EQ(crc32c(buffer.data() + 1001, 3000, first), crc32c_bitwise(buffer.substr(0, 4001)));
}

TEST(Safetensors, RoundTripsEveryDtypeByteExactly) {
  ScratchDir dir;
  NamedTensors tensors = every_dtype();
  // A strided view: columns 2..4 of a 6x8 matrix, written as its own contiguous 6x3 tensor.
  Tensor parent = testing::random_normal({6, 8}, 14, DType::f32);
  tensors.emplace_back("view", parent.narrow(1, 2, 3));
  Bytes view_bytes;
  for (int r = 0; r < 6; ++r)
    view_bytes.append(reinterpret_cast<const char*>(parent.data<float>() + r * 8 + 2), 3 * sizeof(float));

  std::string path = dir.file("all.safetensors");
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "round trip ✓"}};
  save_safetensors(path, tensors, metadata);
  SafetensorsFile file = load_safetensors(path);

  EXPECT_EQ(file.path(), path);
  EXPECT_EQ(file.metadata(), metadata);
  ASSERT_EQ(file.names().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, original] = tensors[i];
    EXPECT_EQ(file.names()[i], name);
    ASSERT_TRUE(file.contains(name));
    EXPECT_EQ(file.dtype(name), original.dtype()) << name;
    EXPECT_EQ(file.shape(name), original.shape()) << name;
    Bytes expected = name == "view" ? view_bytes : bytes_of(original);
    EXPECT_EQ(bytes_of(file.get(name)), expected) << name;
  }
  EXPECT_FALSE(file.contains("missing"));
  EXPECT_THROW(file.get("missing"), Error);
  // Only the final file is left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// Reads the writer's output with a reader written here from the format description.
TEST(Safetensors, WriterFollowsTheFormat) {
  ScratchDir dir;
  NamedTensors tensors = every_dtype();
  std::string path = dir.file("spec.safetensors");
  save_safetensors(path, tensors, {{"format", "pt"}});
  Bytes file = read_bytes(path);

  ASSERT_GE(file.size(), 8u);
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = header_length << 8 | uint8_t(file[size_t(i)]);
  EXPECT_EQ(header_length % 8, 0u);
  ASSERT_LE(8 + header_length, file.size());
  std::string header_text = file.substr(8, header_length);
  EXPECT_EQ(header_text.front(), '{');
  size_t closing = header_text.find_last_of('}');
  EXPECT_EQ(header_text.find_first_not_of(' ', closing + 1), std::string::npos) << "padding is spaces";
  nlohmann::json header = nlohmann::json::parse(header_text);
  Bytes data = file.substr(8 + header_length);

  ASSERT_TRUE(header.contains("__metadata__"));
  for (const auto& [key, value] : header["__metadata__"].items()) EXPECT_TRUE(value.is_string()) << key;
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  const std::map<DType, std::string> names = {{DType::f32, "F32"}, {DType::f64, "F64"}, {DType::bf16, "BF16"},
                                              {DType::i32, "I32"}, {DType::i64, "I64"}, {DType::u16, "U16"},
                                              {DType::u32, "U32"}};
  uint64_t data_used = 0;
  for (const auto& [name, tensor] : tensors) {
    ASSERT_TRUE(header.contains(name)) << name;
    const nlohmann::json& entry = header[name];
    EXPECT_EQ(entry.size(), 3u) << name;
    EXPECT_EQ(entry["dtype"], names.at(tensor.dtype())) << name;
    EXPECT_EQ(entry["shape"].get<Shape>(), tensor.shape()) << name;
    uint64_t begin = entry["data_offsets"][0], end = entry["data_offsets"][1];
    EXPECT_EQ(begin % dtype_size(tensor.dtype()), 0u) << name << " is aligned";
    ASSERT_LE(end, data.size());
    EXPECT_EQ(data.substr(begin, end - begin), bytes_of(tensor)) << name;
    data_used += end - begin;
  }
  EXPECT_EQ(header.size(), tensors.size() + 1);
  EXPECT_EQ(data_used, data.size()) << "the tensors cover the data exactly";
}

// A file composed byte by byte as another writer (Python's) would produce it: no braid checksums.
TEST(Safetensors, HandWrittenFileLoads) {
  ScratchDir dir;
  double weights[2] = {1.25, -3.5};
  int32_t counts[3] = {7, -2, 1 << 30};
  Bytes data(reinterpret_cast<const char*>(weights), sizeof weights);
  data.append(reinterpret_cast<const char*>(counts), sizeof counts);
  std::string path = dir.file("hand.safetensors");
  write_bytes(path, compose_file(R"({"__metadata__":{"format":"pt"},)"
                                 R"("counts":{"dtype":"I32","shape":[3],"data_offsets":[16,28]},)"
                                 R"("weights":{"dtype":"F64","shape":[2,1],"data_offsets":[0,16]}})",
                                 data));
  SafetensorsFile file = load_safetensors(path, Checksums::if_present);
  EXPECT_EQ(file.names(), (std::vector<std::string>{"counts", "weights"}));
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(file.get("weights").shape(), (Shape{2, 1}));
  EXPECT_EQ(file.get("weights").to_doubles(), (std::vector<double>{1.25, -3.5}));
  EXPECT_EQ(file.get("counts").dtype(), DType::i32);
  EXPECT_EQ(file.get("counts").to_doubles(), (std::vector<double>{7, -2, 1 << 30}));
  EXPECT_NE(load_error(path).find("no braid checksums"), std::string::npos);
}

// braid's checksums composed here from their definition: CRC-32C of "name\0DTYPE\0d0,d1,...,\0"
// continued over the tensor's bytes, and of "key\0value\0" per metadata entry in key order.
TEST(Safetensors, HandWrittenFileWithBraidChecksumsLoads) {
  ScratchDir dir;
  float values[3] = {0.5f, -1.75f, 3e-3f};
  Bytes data(reinterpret_cast<const char*>(values), sizeof values);
  char tensor_crc[9], metadata_crc[9];
  snprintf(tensor_crc, sizeof tensor_crc, "%08x",
           crc32c_bitwise(data, crc32c_bitwise(Bytes("w\0F32\0"
                                                     "3,\0",
                                                     9))));
  snprintf(metadata_crc, sizeof metadata_crc, "%08x", crc32c_bitwise(Bytes("run\0seven\0", 10)));
  std::string path = dir.file("braid.safetensors");
  write_bytes(path, compose_file(std::string(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)") +
                                     R"("__metadata__":{"run":"seven","braid.checksum.w":")" + tensor_crc +
                                     R"(","braid.checksum.__metadata__":")" + metadata_crc + R"("}})",
                                 data));
  SafetensorsFile file = load_safetensors(path);
  EXPECT_EQ(file.get("w").to_doubles(), (std::vector<double>{0.5, -1.75, double(3e-3f)}));
  EXPECT_EQ(file.metadata(), (std::map<std::string, std::string>{{"run", "seven"}}));
}

TEST(Safetensors, MalformedHeadersRaiseClearErrors) {
  ScratchDir dir;
  const Bytes eight_bytes = bytes_of(testing::random_normal({2}, 31, DType::f32));
  struct Case {
    std::string header;
    Bytes data;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", eight_bytes, "not valid JSON"},
      {R"([{"a":1}])", eight_bytes, "does not start with '{'"},
      {R"({"a":[]})", "", "not an object"},
      {R"({"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", eight_bytes, "unsupported dtype 'F16'"},
      {R"({"a":{"dtype":3,"shape":[2],"data_offsets":[0,8]}})", eight_bytes, "dtype is not a string"},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight_bytes, "needs 12"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight_bytes, "data_offsets"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", eight_bytes, "not a pair"},
      {R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight_bytes, "non-negative integer"},
      {R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", eight_bytes, "non-negative integer"},
      {R"({"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]}})", eight_bytes,
       "dimensions"},
      {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", eight_bytes,
       "overflows"},
      {R"({"a":{"dtype":"F32","shape":[2]}})", eight_bytes, "needs dtype, shape and data_offsets"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", eight_bytes,
       "unknown header field 'extra'"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
       eight_bytes, "overlap or leave a gap"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight_bytes, "overlap or leave a gap"},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight_bytes, "(truncated)"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight_bytes,
       "4 bytes follow the last tensor"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       eight_bytes, "repeats the key 'a'"},
      {R"({"__metadata__":{"n":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight_bytes,
       "metadata 'n' is not a string"},
      {R"({"__metadata__":[],"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight_bytes,
       "__metadata__ is not an object"},
      {R"({"__metadata__":{"braid.checksum.zz":"00000000"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
       eight_bytes, "does not list"},
      {R"({"__metadata__":{"braid.checksum.a":"0000000G"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
       eight_bytes, "not 8 hex digits"},
      {R"({"__metadata__":{"braid.checksum.a":"00000000"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
       eight_bytes, "tensor 'a' fails its checksum"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string path = dir.file("case" + std::to_string(i) + ".safetensors");
    write_bytes(path, compose_file(cases[i].header, cases[i].data));
    std::string message = load_error(path, Checksums::if_present);
    EXPECT_NE(message.find(cases[i].expected), std::string::npos)
        << "case " << i << ": expected '" << cases[i].expected << "' in: " << message;
  }

  std::string path = dir.file("lengths.safetensors");
  write_bytes(path, little_endian_u64(1'000'000'000) + "{}");
  EXPECT_NE(load_error(path).find("header length 1000000000 does not fit"), std::string::npos);
  write_bytes(path, "abc");
  EXPECT_NE(load_error(path).find("too short"), std::string::npos);
  EXPECT_NE(load_error(dir.file("absent.safetensors")).find("cannot open"), std::string::npos);
  EXPECT_NE(load_error(dir.path().string()).find("not a regular file"), std::string::npos);
}

// Overwrites bytes of an existing file in place. Damage is applied and undone this way, because
// replacing or truncating the whole file thousands of times is slow on some filesystems.
void patch_bytes(const std::string& path, size_t offset, const Bytes& bytes) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekp(std::streamoff(offset));
  file.write(bytes.data(), std::streamsize(bytes.size()));
}

// Every byte of the header (length prefix included) and of the data, flipped two ways, and every
// truncation: each load raises, none crashes or succeeds.
TEST(Safetensors, EveryFlippedOrMissingByteIsCaught) {
  ScratchDir dir;
  std::string path = dir.file("damaged.safetensors");
  save_safetensors(path, every_dtype(), {{"format", "pt"}, {"run", "flips"}});
  const Bytes original = read_bytes(path);
  ASSERT_NO_THROW(load_safetensors(path));

  size_t failures = 0;  // load_error reports each; a broken reader stops the test after a few
  for (size_t position = 0; position < original.size() && failures < 5; ++position)
    for (unsigned char mask : {0x01, 0xff}) {
      patch_bytes(path, position, Bytes(1, char(original[position] ^ mask)));
      failures += load_error(path).empty();
      patch_bytes(path, position, original.substr(position, 1));
    }
  for (size_t length = 0; length < original.size() && failures < 5; ++length) {
    fs::resize_file(path, length);
    failures += load_error(path).empty();
    patch_bytes(path, length, original.substr(length));
  }
  ASSERT_EQ(read_bytes(path), original);
  write_bytes(path, original + "x");
  EXPECT_NE(load_error(path).find("1 bytes follow the last tensor"), std::string::npos);

  // A data byte flip names the tensor that holds it.
  Bytes damaged = original;
  damaged.back() = char(damaged.back() ^ 0x10);
  write_bytes(path, damaged);
  std::string message = load_error(path);
  EXPECT_NE(message.find("fails its checksum"), std::string::npos) << message;
  EXPECT_NE(message.find("tensor '"), std::string::npos) << message;
}

TEST(Safetensors, SaveRejectsBadInputsAndUnwritablePaths) {
  ScratchDir dir;
  Tensor values = testing::random_normal({3}, 41, DType::f32);
  std::string path = dir.file("bad.safetensors");
  auto save_error = [&](const std::string& target, const NamedTensors& tensors,
                        const std::map<std::string, std::string>& metadata) {
    try {
      save_safetensors(target, tensors, metadata);
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(save_error(path, {{"a", values}, {"a", values}}, {}).find("'a' given twice"), std::string::npos);
  EXPECT_NE(save_error(path, {{"__metadata__", values}}, {}).find("invalid tensor name"), std::string::npos);
  EXPECT_NE(save_error(path, {{"a", Tensor()}}, {}).find("undefined"), std::string::npos);
  EXPECT_NE(save_error(path, {{"a", values}}, {{"braid.checksum.a", "0"}}).find("reserved"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(path));

  // A path whose parent is a regular file: even root cannot write there.
  write_bytes(dir.file("plain_file"), "not a directory");
  std::string unwritable = dir.file("plain_file") + "/weights.safetensors";
  std::string message = save_error(unwritable, {{"a", values}}, {});
  EXPECT_NE(message.find(unwritable), std::string::npos) << message;
  EXPECT_NE(message.find("cannot create"), std::string::npos) << message;

  // Saving over an existing file replaces it whole.
  save_safetensors(path, {{"a", values}}, {});
  Tensor other = testing::random_normal({5}, 42, DType::f64);
  save_safetensors(path, {{"b", other}}, {});
  SafetensorsFile file = load_safetensors(path);
  EXPECT_EQ(file.names(), (std::vector<std::string>{"b"}));
  EXPECT_EQ(bytes_of(file.get("b")), bytes_of(other));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 2);
}

}  // namespace
}  // namespace braid
