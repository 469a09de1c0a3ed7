// The safetensors file format (weights and optimizer state on disk), with braid's integrity checks.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON ({"name": {"dtype", "shape",
// "data_offsets": [begin, end]}, ..., "__metadata__": {string: string}}, padded with spaces to a
// multiple of 8), then the tensors' bytes back to back. Files stay loadable by Python's safetensors.
//
// The format has no checksum, so braid adds CRC-32C values to __metadata__: "braid.checksum.<name>"
// covers a tensor's name, dtype, shape and bytes, and "braid.checksum.__metadata__" covers the
// other metadata. Together with the strict structural checks (offsets cover the data exactly, the
// file is exactly as long as the header says) every flipped or missing byte is caught on load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace braid {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// CRC-32C (Castagnoli), continuing from `crc`: crc32c(b, crc32c(a)) == crc32c(a followed by b).
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

// Writes `tensors` (any device, any strides) with `metadata` to `path` through a temporary file
// that is fsynced and renamed into place, so `path` holds either the old file or the whole new one.
// Keys starting with "braid.checksum." are reserved. The data are ordered by element size, largest
// first, so every tensor stays aligned; the header lists the tensors in the order given.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Whether loading insists on braid's checksums (files braid wrote) or also accepts files from
// elsewhere (Python), verifying whatever checksums are present.
enum class Checksums { required, if_present };

// A loaded, verified file: every tensor read into host memory.
class SafetensorsFile {
 public:
  const std::string& path() const { return path_; }
  // Tensor names in header order (for braid's files, the order they were saved in).
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const;
  DType dtype(const std::string& name) const { return get(name).dtype(); }
  const Shape& shape(const std::string& name) const { return get(name).shape(); }
  // __metadata__ without braid's checksum entries.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The tensor as a contiguous CPU tensor (the file object's own copy, not a clone).
  const Tensor& get(const std::string& name) const;
  // Every tensor, in header order.
  NamedTensors tensors() const;

 private:
  friend SafetensorsFile load_safetensors(const std::string& path, Checksums checksums);
  std::string path_;
  std::vector<std::string> names_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Reads and checks `path`; any problem (missing or truncated file, bad header, offsets, dtype,
// sizes, checksum mismatch) raises braid::Error naming the file and what is wrong.
SafetensorsFile load_safetensors(const std::string& path, Checksums checksums = Checksums::required);

}  // namespace braid
