#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "runtime/device_copy.h"
#include "runtime/file_sync.h"

namespace braid {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian values, written here straight from memory");

namespace {

using Json = nlohmann::ordered_json;

// The format's own limit (Python's reader refuses larger headers too).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
const std::string kChecksumPrefix = "braid.checksum.";
const std::string kMetadataKey = "__metadata__";

// ---- CRC-32C ----------------------------------------------------------------------------------

constexpr uint32_t kCastagnoliReflected = 0x82F63B78u;

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kCastagnoliReflected : 0u);
    table[byte] = crc;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

uint32_t crc_bytes(uint32_t state, const unsigned char* data, size_t size) {
  for (size_t i = 0; i < size; ++i) state = (state >> 8) ^ kCrcTable[(state ^ data[i]) & 0xffu];
  return state;
}

#if defined(__x86_64__)
// The SSE4.2 crc32 instruction computes exactly CRC-32C, 8 bytes per instruction.
__attribute__((target("sse4.2"))) uint32_t crc_words_hardware(uint32_t state, const unsigned char* data,
                                                              size_t words) {
  uint64_t wide = state;
  for (size_t i = 0; i < words; ++i) {
    uint64_t word;
    memcpy(&word, data + 8 * i, sizeof word);
    wide = __builtin_ia32_crc32di(wide, word);
  }
  return uint32_t(wide);
}

bool has_crc_instruction() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

// ---- dtypes, checksums, errors ----------------------------------------------------------------

const std::array<std::pair<DType, const char*>, 7> kDTypeNames = {{{DType::f32, "F32"},
                                                                   {DType::f64, "F64"},
                                                                   {DType::bf16, "BF16"},
                                                                   {DType::i32, "I32"},
                                                                   {DType::i64, "I64"},
                                                                   {DType::u16, "U16"},
                                                                   {DType::u32, "U32"}}};

const char* safetensors_dtype(DType dtype) {
  for (const auto& [known, name] : kDTypeNames)
    if (known == dtype) return name;
  BRAID_FAIL("safetensors: no name for dtype ", dtype_name(dtype));
}

bool parse_safetensors_dtype(const std::string& name, DType& dtype) {
  for (const auto& [known, known_name] : kDTypeNames)
    if (name == known_name) {
      dtype = known;
      return true;
    }
  return false;
}

// Covers what the header says about a tensor as well as its bytes, so a header edit that keeps
// the sizes consistent (I32 <-> U32, shape [2, 6] <-> [3, 4]) is caught too.
uint32_t tensor_checksum(const std::string& name, DType dtype, const Shape& shape, const void* data,
                         size_t bytes) {
  std::string descriptor = name + '\0' + safetensors_dtype(dtype) + '\0';
  for (int64_t size : shape) descriptor += std::to_string(size) + ',';
  descriptor += '\0';
  return crc32c(data, bytes, crc32c(descriptor.data(), descriptor.size()));
}

// Over the metadata entries other than checksums, in key order.
uint32_t metadata_checksum(const std::map<std::string, std::string>& metadata) {
  std::string joined;
  for (const auto& [key, value] : metadata) joined += key + '\0' + value + '\0';
  return crc32c(joined.data(), joined.size());
}

std::string checksum_text(uint32_t checksum) {
  char text[9];
  snprintf(text, sizeof text, "%08x", checksum);
  return text;
}

bool parse_checksum_text(const std::string& text, uint32_t& checksum) {
  if (text.size() != 8) return false;
  checksum = 0;
  for (char c : text) {
    uint32_t digit;
    if (c >= '0' && c <= '9')
      digit = uint32_t(c - '0');
    else if (c >= 'a' && c <= 'f')
      digit = uint32_t(c - 'a' + 10);
    else
      return false;
    checksum = checksum << 4 | digit;
  }
  return true;
}


[[noreturn]] void file_error(const std::string& path, const std::string& message) {
  BRAID_FAIL(path, ": ", message);
}

// ---- file I/O ---------------------------------------------------------------------------------

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  // Closes now, so that a failing close (a delayed write error) can be reported.
  int close() {
    int result = ::close(fd_);
    fd_ = -1;
    return result;
  }

 private:
  int fd_;
};

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t written = ::write(fd, bytes, std::min<size_t>(size, size_t(1) << 30));
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) file_error(path, "write failed (" + errno_text() + ")");
    bytes += written;
    size -= size_t(written);
  }
}

void read_all_at(int fd, void* data, size_t size, uint64_t offset, const std::string& path) {
  char* bytes = static_cast<char*>(data);
  while (size > 0) {
    ssize_t got = ::pread(fd, bytes, std::min<size_t>(size, size_t(1) << 30), off_t(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) file_error(path, "read failed (" + errno_text() + ")");
    if (got == 0) file_error(path, "file ended early (truncated while being read?)");
    bytes += got;
    size -= size_t(got);
    offset += uint64_t(got);
  }
}

std::string parent_directory(const std::string& path) {
  std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

// ---- header parsing ---------------------------------------------------------------------------

struct Entry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

// JSON objects with a repeated key are ambiguous (readers disagree on which value wins): refuse.
Json parse_header_json(const std::string& path, const std::string& text) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto track_keys = [&](int, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) open_objects.emplace_back();
    if (event == Json::parse_event_t::object_end) open_objects.pop_back();
    if (event == Json::parse_event_t::key && !open_objects.back().insert(parsed.get<std::string>()).second &&
        duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  Json header;
  try {
    header = Json::parse(text, track_keys);
  } catch (const Json::exception& error) {
    file_error(path, std::string("header is not valid JSON (") + error.what() + ")");
  }
  if (!duplicate.empty()) file_error(path, "header repeats the key '" + duplicate + "'");
  return header;
}

Entry parse_entry(const std::string& path, const std::string& name, const Json& value) {
  auto bad = [&](const std::string& what) { file_error(path, "tensor '" + name + "': " + what); };
  if (!value.is_object()) bad("header entry is not an object");
  for (const auto& [key, field] : value.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets") bad("unknown header field '" + key + "'");
  if (!value.contains("dtype") || !value.contains("shape") || !value.contains("data_offsets"))
    bad("header entry needs dtype, shape and data_offsets");

  Entry entry;
  entry.name = name;
  const Json& dtype = value["dtype"];
  if (!dtype.is_string()) bad("dtype is not a string");
  if (!parse_safetensors_dtype(dtype.get<std::string>(), entry.dtype))
    bad("unsupported dtype '" + dtype.get<std::string>() +
        "' (braid reads F32, F64, BF16, I32, I64, U16, U32)");

  const Json& shape = value["shape"];
  if (!shape.is_array()) bad("shape is not an array");
  if (shape.size() > size_t(kMaxDims))
    bad("shape has " + std::to_string(shape.size()) + " dimensions, at most " + std::to_string(kMaxDims) +
        " are supported");
  uint64_t numel = 1;
  for (const Json& size : shape) {
    if (!size.is_number_unsigned() || size.get<uint64_t>() > uint64_t(INT64_MAX))
      bad("shape " + shape.dump() + " has an entry that is not a non-negative integer");
    if (__builtin_mul_overflow(numel, size.get<uint64_t>(), &numel))
      bad("shape " + shape.dump() + " overflows");
    entry.shape.push_back(int64_t(size.get<uint64_t>()));
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(numel, uint64_t(dtype_size(entry.dtype)), &bytes))
    bad("shape " + shape.dump() + " overflows");

  const Json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    bad("data_offsets " + offsets.dump() + " is not a pair of non-negative integers");
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  if (entry.end < entry.begin || entry.end - entry.begin != bytes)
    bad("data_offsets " + offsets.dump() + " span " + std::to_string(int64_t(entry.end - entry.begin)) +
        " bytes, but " + dtype.get<std::string>() + " " + shape_str(entry.shape) + " needs " +
        std::to_string(bytes));
  return entry;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  const unsigned char* bytes = static_cast<const unsigned char*>(data);
  uint32_t state = ~crc;
#if defined(__x86_64__)
  if (has_crc_instruction()) {
    size_t head = std::min(size, (8 - reinterpret_cast<uintptr_t>(bytes) % 8) % 8);
    state = crc_bytes(state, bytes, head);
    size_t words = (size - head) / 8;
    state = crc_words_hardware(state, bytes + head, words);
    size_t done = head + 8 * words;
    return ~crc_bytes(state, bytes + done, size - done);
  }
#endif
  return ~crc_bytes(state, bytes, size);
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (const auto& [name, tensor] : tensors) {
    BRAID_CHECK(!name.empty() && name != kMetadataKey, path, ": invalid tensor name '", name, "'");
    BRAID_CHECK(seen.insert(name).second, path, ": tensor name '", name, "' given twice");
    BRAID_CHECK(tensor.defined(), path, ": tensor '", name, "' is undefined");
  }
  for (const auto& [key, value] : metadata)
    BRAID_CHECK(!key.starts_with(kChecksumPrefix), path, ": metadata key '", key, "' is reserved");

  // Host, contiguous copies where needed; the checksums must be known before the header is written.
  std::vector<Tensor> host(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) host[i] = tensors[i].second.to(Device::cpu()).contiguous();

  std::vector<size_t> data_order(tensors.size());
  std::iota(data_order.begin(), data_order.end(), size_t(0));
  std::stable_sort(data_order.begin(), data_order.end(), [&](size_t a, size_t b) {
    return dtype_size(host[a].dtype()) > dtype_size(host[b].dtype());
  });
  std::vector<uint64_t> begin(tensors.size());
  uint64_t data_bytes = 0;
  for (size_t i : data_order) {
    begin[i] = data_bytes;
    data_bytes += host[i].nbytes();
  }

  Json header_metadata = Json::object();
  for (const auto& [key, value] : metadata) header_metadata[key] = value;
  header_metadata[kChecksumPrefix + kMetadataKey] = checksum_text(metadata_checksum(metadata));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& tensor = host[i];
    header_metadata[kChecksumPrefix + tensors[i].first] =
        checksum_text(tensor_checksum(tensors[i].first, tensor.dtype(), tensor.shape(),
                                      tensor.numel() ? tensor.raw_data() : nullptr, tensor.nbytes()));
  }
  Json header = Json::object();
  header[kMetadataKey] = header_metadata;
  for (size_t i = 0; i < tensors.size(); ++i)
    header[tensors[i].first] = {{"dtype", safetensors_dtype(host[i].dtype())},
                                {"shape", host[i].shape()},
                                {"data_offsets", {begin[i], begin[i] + host[i].nbytes()}}};
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const Json::exception& error) {
    file_error(path, std::string("cannot encode the header (") + error.what() + ")");
  }
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  uint64_t header_length = header_text.size();

  std::string temporary = path + ".tmp-" + std::to_string(::getpid());
  FileDescriptor fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) file_error(temporary, "cannot create (" + errno_text() + ")");
  try {
    write_all(fd.get(), &header_length, sizeof header_length, temporary);
    write_all(fd.get(), header_text.data(), header_text.size(), temporary);
    for (size_t i : data_order)
      if (host[i].numel() > 0) write_all(fd.get(), host[i].raw_data(), host[i].nbytes(), temporary);
    if (::fsync(fd.get()) != 0) file_error(temporary, "fsync failed (" + errno_text() + ")");
    if (fd.close() != 0) file_error(temporary, "close failed (" + errno_text() + ")");
    if (::rename(temporary.c_str(), path.c_str()) != 0)
      file_error(path, "cannot rename " + temporary + " into place (" + errno_text() + ")");
  } catch (...) {
    ::unlink(temporary.c_str());
    throw;
  }
  fsync_path(parent_directory(path), /*directory=*/true);
}

bool SafetensorsFile::contains(const std::string& name) const { return tensors_.count(name) > 0; }

const Tensor& SafetensorsFile::get(const std::string& name) const {
  auto found = tensors_.find(name);
  if (found == tensors_.end()) file_error(path_, "no tensor named '" + name + "'");
  return found->second;
}

NamedTensors SafetensorsFile::tensors() const {
  NamedTensors all;
  for (const std::string& name : names_) all.emplace_back(name, tensors_.at(name));
  return all;
}

SafetensorsFile load_safetensors(const std::string& path, Checksums checksums) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) file_error(path, "cannot open (" + errno_text() + ")");
  struct stat info;
  if (::fstat(fd.get(), &info) != 0) file_error(path, "cannot stat (" + errno_text() + ")");
  if (!S_ISREG(info.st_mode)) file_error(path, "not a regular file");
  uint64_t file_size = uint64_t(info.st_size);
  if (file_size < 8)
    file_error(path, "file is " + std::to_string(file_size) +
                         " bytes, too short for the header length (truncated?)");

  uint64_t header_length;
  read_all_at(fd.get(), &header_length, 8, 0, path);
  if (header_length > kMaxHeaderBytes || header_length > file_size - 8)
    file_error(path, "header length " + std::to_string(header_length) + " does not fit a file of " +
                         std::to_string(file_size) + " bytes (truncated or corrupt)");
  std::string header_text(header_length, '\0');
  read_all_at(fd.get(), header_text.data(), header_length, 8, path);
  if (header_text.empty() || header_text[0] != '{') file_error(path, "header does not start with '{'");
  Json header = parse_header_json(path, header_text);
  if (!header.is_object()) file_error(path, "header is not a JSON object");

  SafetensorsFile file;
  file.path_ = path;
  std::vector<Entry> entries;
  std::map<std::string, uint32_t> stored_checksums;
  for (const auto& [key, value] : header.items()) {
    if (key != kMetadataKey) {
      entries.push_back(parse_entry(path, key, value));
      file.names_.push_back(key);
      continue;
    }
    if (!value.is_object()) file_error(path, "__metadata__ is not an object");
    for (const auto& [meta_key, meta_value] : value.items()) {
      if (!meta_value.is_string()) file_error(path, "metadata '" + meta_key + "' is not a string");
      const std::string& text = meta_value.get_ref<const std::string&>();
      if (!meta_key.starts_with(kChecksumPrefix)) {
        file.metadata_[meta_key] = text;
        continue;
      }
      std::string subject = meta_key.substr(kChecksumPrefix.size());
      if (!parse_checksum_text(text, stored_checksums[subject]))
        file_error(path, "checksum '" + meta_key + "' is '" + text + "', not 8 hex digits");
    }
  }

  // The tensors must tile the data section exactly: no overlaps, gaps, or bytes past the end.
  std::vector<const Entry*> by_offset;
  for (const Entry& entry : entries) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  for (const Entry* entry : by_offset) {
    if (entry->begin != covered)
      file_error(path, "tensor '" + entry->name + "' starts at data byte " + std::to_string(entry->begin) +
                           ", expected " + std::to_string(covered) + " (offsets overlap or leave a gap)");
    covered = entry->end;
  }
  uint64_t data_size = file_size - 8 - header_length;
  if (covered > data_size)
    file_error(path, "tensors need " + std::to_string(covered) + " data bytes, the file has " +
                         std::to_string(data_size) + " (truncated)");
  if (covered < data_size)
    file_error(path, std::to_string(data_size - covered) + " bytes follow the last tensor");

  for (const auto& [subject, checksum] : stored_checksums)
    if (subject != kMetadataKey && !header.contains(subject))
      file_error(path, "checksum for a tensor '" + subject + "' that the header does not list");
  auto stored = stored_checksums.find(kMetadataKey);
  if (stored == stored_checksums.end()) {
    if (checksums == Checksums::required)
      file_error(path, "no braid checksums in the metadata (not written by braid, or corrupt)");
  } else if (stored->second != metadata_checksum(file.metadata_)) {
    file_error(path, "metadata checksum mismatch (corrupt header)");
  }

  for (const Entry* entry : by_offset) {
    Tensor tensor = Tensor::empty(entry->shape, entry->dtype);
    void* data = tensor.numel() ? tensor.raw_data() : nullptr;
    read_all_at(fd.get(), data, entry->end - entry->begin, 8 + header_length + entry->begin, path);
    auto stored_checksum = stored_checksums.find(entry->name);
    if (stored_checksum == stored_checksums.end()) {
      if (checksums == Checksums::required)
        file_error(path, "tensor '" + entry->name + "' has no braid checksum (corrupt header)");
    } else {
      uint32_t computed = tensor_checksum(entry->name, entry->dtype, entry->shape, data, tensor.nbytes());
      if (computed != stored_checksum->second)
        file_error(path, "tensor '" + entry->name + "' fails its checksum (stored " +
                             checksum_text(stored_checksum->second) + ", computed " +
                             checksum_text(computed) + "): the file is corrupt");
    }
    file.tensors_[entry->name] = tensor;
  }
  return file;
}

}  // namespace braid
