// Byte-level BPE: pre-tokenization by GPT-2's rule, then per piece the lowest-ranked adjacent pair is
// merged until none is left. Token ids of a piece are cached per thread, since text repeats its words.
#include "tools/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <array>
#include <atomic>
#include <fstream>
#include <functional>
#include <queue>
#include <set>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "runtime/error.h"
#include "tools/unicode_categories.h"

namespace braid {

using unicode::CodePointClass;

// ---------------------------------------------------------------------------------------------
// Pre-tokenization
// ---------------------------------------------------------------------------------------------
namespace {

struct CodePointAt {
  CodePointClass cls;
  size_t length;  // bytes
};

bool is_continuation(unsigned char byte, unsigned char low = 0x80, unsigned char high = 0xBF) {
  return byte >= low && byte <= high;
}

// Decodes the code point starting at text[pos] by the well-formed sequences of Unicode's Table 3-7;
// a byte that starts no well-formed sequence is one unit of class `other`.
CodePointAt code_point_at(std::string_view text, size_t pos) {
  auto byte = [&](size_t i) -> unsigned char { return pos + i < text.size() ? text[pos + i] : 0; };
  unsigned char b0 = byte(0);
  if (b0 < 0x80) return {unicode::classify(b0), 1};
  char32_t cp = 0;
  size_t length = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF && is_continuation(byte(1))) {
    cp = b0 & 0x1F;
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    unsigned char low = b0 == 0xE0 ? 0xA0 : 0x80, high = b0 == 0xED ? 0x9F : 0xBF;
    if (is_continuation(byte(1), low, high) && is_continuation(byte(2))) {
      cp = b0 & 0x0F;
      length = 3;
    }
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    unsigned char low = b0 == 0xF0 ? 0x90 : 0x80, high = b0 == 0xF4 ? 0x8F : 0xBF;
    if (is_continuation(byte(1), low, high) && is_continuation(byte(2)) && is_continuation(byte(3))) {
      cp = b0 & 0x07;
      length = 4;
    }
  }
  if (length == 0) return {CodePointClass::other, 1};
  for (size_t i = 1; i < length; ++i) cp = (cp << 6) | (byte(i) & 0x3F);
  return {unicode::classify(cp), length};
}

size_t end_of_run(std::string_view text, size_t pos, CodePointClass cls) {
  while (pos < text.size()) {
    CodePointAt at = code_point_at(text, pos);
    if (at.cls != cls) break;
    pos += at.length;
  }
  return pos;
}

// 's|'t|'re|'ve|'m|'ll|'d
size_t contraction_length(std::string_view rest) {
  if (rest.size() < 2 || rest[0] != '\'') return 0;
  for (std::string_view suffix : {"s", "t", "re", "ve", "m", "ll", "d"})
    if (rest.substr(1).starts_with(suffix)) return 1 + suffix.size();
  return 0;
}

// The end of the piece starting at `pos`: the first alternative of
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ that matches there.
size_t pretoken_end(std::string_view text, size_t pos) {
  if (size_t length = contraction_length(text.substr(pos))) return pos + length;
  CodePointAt first = code_point_at(text, pos);
  if (text[pos] == ' ' && pos + 1 < text.size()) {
    CodePointClass next = code_point_at(text, pos + 1).cls;
    if (next != CodePointClass::whitespace) return end_of_run(text, pos + 1, next);
  }
  if (first.cls != CodePointClass::whitespace) return end_of_run(text, pos, first.cls);
  // \s+(?!\S): a whitespace run followed by a non-space gives its last character to the next piece,
  // unless the run is that one character (then \s+ takes it).
  size_t last_start = pos, end = pos;
  while (end < text.size()) {
    CodePointAt at = code_point_at(text, end);
    if (at.cls != CodePointClass::whitespace) break;
    last_start = end;
    end += at.length;
  }
  if (end == text.size() || last_start == pos) return end;
  return last_start;
}

// ---------------------------------------------------------------------------------------------
// GPT-2's byte alphabet
// ---------------------------------------------------------------------------------------------

bool gpt2_byte_shows_as_itself(int byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
}

constexpr char32_t kNoByte = 0xFFFFFFFF;

// The inverse of gpt2_byte_to_code_point over code points below 0x144 (the alphabet's range).
const std::array<uint32_t, 0x144>& gpt2_code_point_to_byte() {
  static const std::array<uint32_t, 0x144> table = [] {
    std::array<uint32_t, 0x144> inverse;
    inverse.fill(kNoByte);
    for (int byte = 0; byte < 256; ++byte) inverse[gpt2_byte_to_code_point(byte)] = byte;
    return inverse;
  }();
  return table;
}

// ---------------------------------------------------------------------------------------------
// Base64 (tiktoken's files)
// ---------------------------------------------------------------------------------------------

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t group = 0;
    size_t count = std::min<size_t>(3, bytes.size() - i);
    for (size_t k = 0; k < 3; ++k)
      group = (group << 8) | (k < count ? static_cast<unsigned char>(bytes[i + k]) : 0);
    for (size_t k = 0; k < 4; ++k)
      out += k <= count ? kBase64Alphabet[(group >> (18 - 6 * k)) & 0x3F] : '=';
  }
  return out;
}

// Returns false on anything but canonical padded base64 of at least one byte.
bool base64_decode(std::string_view text, std::string& bytes) {
  bytes.clear();
  if (text.empty() || text.size() % 4 != 0) return false;
  size_t padding = text.ends_with("==") ? 2 : text.ends_with('=') ? 1 : 0;
  uint32_t bits = 0;
  int bit_count = 0;
  for (char c : text.substr(0, text.size() - padding)) {
    size_t value = kBase64Alphabet.find(c);
    if (value == std::string_view::npos) return false;
    bits = (bits << 6) | static_cast<uint32_t>(value);
    bit_count += 6;
    if (bit_count >= 8) {
      bit_count -= 8;
      bytes += static_cast<char>((bits >> bit_count) & 0xFF);
    }
  }
  return base64_encode(bytes) == text;  // rejects stray bits and wrong padding
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  BRAID_CHECK(in, path, ": cannot open for reading");
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (line.ends_with('\r')) line.remove_suffix(1);
    lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

uint64_t pair_key(uint32_t left, uint32_t right) { return (uint64_t{left} << 32) | right; }

struct Merge {
  uint32_t rank;
  uint32_t id;  // the merged token
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

std::atomic<uint64_t> next_tokenizer_serial{1};

}  // namespace

std::vector<std::string_view> split_pretokens(std::string_view text) {
  std::vector<std::string_view> pieces;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = pretoken_end(text, pos);
    pieces.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return pieces;
}

char32_t gpt2_byte_to_code_point(uint8_t byte) {
  if (gpt2_byte_shows_as_itself(byte)) return byte;
  // The other bytes, in increasing order, show as U+0100, U+0101, ...
  char32_t shifted = 0x100;
  for (int b = 0; b < byte; ++b) shifted += !gpt2_byte_shows_as_itself(b);
  return shifted;
}

// ---------------------------------------------------------------------------------------------
// The vocabulary and the merge loop
// ---------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::vector<std::string> token_bytes;  // by id; a special's bytes are its name
  std::vector<bool> is_special;          // by id
  std::array<uint32_t, 256> byte_ids{};
  std::unordered_map<uint64_t, Merge> merges;  // pair_key(left, right) -> merge
  std::map<std::string, uint32_t> specials;
  uint64_t serial = next_tokenizer_serial++;  // tells the per-thread caches apart

  const Merge* find_merge(uint32_t left, uint32_t right) const {
    auto it = merges.find(pair_key(left, right));
    return it == merges.end() ? nullptr : &it->second;
  }
  void append_piece_ids(std::string_view piece, std::vector<uint32_t>& ids) const;
  void merge_piece(std::string_view piece, std::vector<uint32_t>& ids) const;
  void check_complete(const std::string& source) const;
};

// Repeatedly merges the adjacent pair of lowest rank (leftmost among equal ranks). For vocabularies
// whose merges come after the merges making their parts (GPT-2's, any trained one), this equals
// GPT-2's loop that merges every occurrence of the best pair in one pass; it is tiktoken's loop.
void Tokenizer::Impl::merge_piece(std::string_view piece, std::vector<uint32_t>& ids) const {
  size_t n = piece.size();
  std::vector<uint32_t> part(n);
  std::vector<size_t> prev(n), next(n);  // a linked list of live parts; n marks the end
  for (size_t i = 0; i < n; ++i) {
    part[i] = byte_ids[static_cast<unsigned char>(piece[i])];
    prev[i] = i == 0 ? n : i - 1;
    next[i] = i + 1;
  }
  using Candidate = std::pair<uint32_t, size_t>;  // (rank, position of the left part)
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> candidates;
  auto offer = [&](size_t left) {
    if (left == n || next[left] == n) return;
    if (const Merge* merge = find_merge(part[left], part[next[left]])) candidates.push({merge->rank, left});
  };
  for (size_t i = 0; i + 1 < n; ++i) offer(i);
  std::vector<bool> dead(n, false);
  while (!candidates.empty()) {
    auto [rank, left] = candidates.top();
    candidates.pop();
    if (dead[left] || next[left] == n) continue;
    const Merge* merge = find_merge(part[left], part[next[left]]);
    if (merge == nullptr || merge->rank != rank) continue;  // the parts changed since it was offered
    size_t right = next[left];
    part[left] = merge->id;
    dead[right] = true;
    next[left] = next[right];
    if (next[right] != n) prev[next[right]] = left;
    offer(prev[left]);
    offer(left);
  }
  for (size_t i = 0; i < n; i = next[i]) ids.push_back(part[i]);
}

void Tokenizer::Impl::append_piece_ids(std::string_view piece, std::vector<uint32_t>& ids) const {
  if (piece.size() == 1) {
    ids.push_back(byte_ids[static_cast<unsigned char>(piece[0])]);
    return;
  }
  struct Cache {
    uint64_t owner = 0;
    std::unordered_map<std::string, std::vector<uint32_t>, StringHash, std::equal_to<>> pieces;
  };
  constexpr size_t kMaxCachedPieces = 1 << 17, kMaxCachedPieceBytes = 256;
  thread_local Cache cache;
  if (cache.owner != serial || cache.pieces.size() >= kMaxCachedPieces) {
    cache.pieces.clear();
    cache.owner = serial;
  }
  if (auto hit = cache.pieces.find(piece); hit != cache.pieces.end()) {
    ids.insert(ids.end(), hit->second.begin(), hit->second.end());
    return;
  }
  size_t first = ids.size();
  merge_piece(piece, ids);
  if (piece.size() <= kMaxCachedPieceBytes)
    cache.pieces.emplace(std::string(piece), std::vector<uint32_t>(ids.begin() + first, ids.end()));
}

// Every id in [0, vocab) has a token and every byte a token of its own.
void Tokenizer::Impl::check_complete(const std::string& source) const {
  BRAID_CHECK(!token_bytes.empty(), source, ": the vocabulary is empty");
  for (const auto& [name, id] : specials) BRAID_CHECK(!name.empty(), source, ": a special token has an empty name");
  std::vector<bool> has_byte(256, false);
  for (size_t id = 0; id < token_bytes.size(); ++id)
    if (!is_special[id] && token_bytes[id].size() == 1) has_byte[static_cast<unsigned char>(token_bytes[id][0])] = true;
  for (int byte = 0; byte < 256; ++byte)
    BRAID_CHECK(has_byte[byte], source, ": no token for the single byte 0x", std::hex, byte,
                " (a byte-level vocabulary needs all 256)");
}

namespace {

// Places `id` in a vocabulary under construction, whose ids must end up covering [0, size).
void place_token(Tokenizer::Impl& impl, std::vector<bool>& filled, const std::string& source, uint64_t id,
                 std::string bytes, bool special) {
  BRAID_CHECK(id < filled.size(), source, ": id ", id, " leaves a gap: ", filled.size(),
              " tokens need ids 0..", filled.size() - 1);
  BRAID_CHECK(!filled[id], source, ": id ", id, " is used twice");
  filled[id] = true;
  impl.token_bytes[id] = std::move(bytes);
  impl.is_special[id] = special;
}

// Tiktoken's vocabulary: `ranked` (rank = id, bytes) plus specials; an adjacent pair merges at the rank
// of its concatenation, so every split of a token into two tokens is a merge.
std::shared_ptr<Tokenizer::Impl> build_ranked(const std::string& source,
                                              std::vector<std::pair<uint64_t, std::string>> ranked,
                                              const std::map<std::string, uint32_t>& specials) {
  auto impl = std::make_shared<Tokenizer::Impl>();
  size_t size = ranked.size() + specials.size();
  impl->token_bytes.resize(size);
  impl->is_special.assign(size, false);
  std::vector<bool> filled(size, false);
  for (auto& [rank, bytes] : ranked) place_token(*impl, filled, source, rank, std::move(bytes), false);
  for (const auto& [name, id] : specials) place_token(*impl, filled, source, id, name, true);
  impl->specials = specials;
  impl->check_complete(source);

  std::unordered_map<std::string_view, uint32_t> id_of;
  for (uint32_t id = 0; id < size; ++id) {
    if (impl->is_special[id]) continue;
    bool fresh = id_of.emplace(impl->token_bytes[id], id).second;
    BRAID_CHECK(fresh, source, ": the bytes of token ", id, " (base64 ", base64_encode(impl->token_bytes[id]),
                ") appear twice");
    if (impl->token_bytes[id].size() == 1) impl->byte_ids[static_cast<unsigned char>(impl->token_bytes[id][0])] = id;
  }
  for (uint32_t id = 0; id < size; ++id) {
    std::string_view bytes = impl->token_bytes[id];
    if (impl->is_special[id]) continue;
    for (size_t split = 1; split < bytes.size(); ++split) {
      auto left = id_of.find(bytes.substr(0, split)), right = id_of.find(bytes.substr(split));
      if (left != id_of.end() && right != id_of.end())
        impl->merges.emplace(pair_key(left->second, right->second), Merge{id, id});
    }
  }
  return impl;
}

// The bytes a GPT-2 token string stands for; false if a character is outside the byte alphabet.
bool gpt2_token_bytes(std::string_view token, std::string& bytes) {
  bytes.clear();
  const auto& to_byte = gpt2_code_point_to_byte();
  for (size_t pos = 0; pos < token.size();) {
    unsigned char b0 = token[pos];
    char32_t cp;
    if (b0 < 0x80) {
      cp = b0;
      pos += 1;
    } else if ((b0 & 0xE0) == 0xC0 && pos + 1 < token.size()) {  // the alphabet ends at U+0143
      cp = ((b0 & 0x1F) << 6) | (static_cast<unsigned char>(token[pos + 1]) & 0x3F);
      pos += 2;
    } else {
      return false;
    }
    if (cp >= to_byte.size() || to_byte[cp] == kNoByte) return false;
    bytes += static_cast<char>(to_byte[cp]);
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Loading and saving
// ---------------------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::load_gpt2(const std::string& encoder_json_path, const std::string& vocab_bpe_path) {
  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(read_file(encoder_json_path));
  } catch (const nlohmann::json::exception& e) {
    BRAID_FAIL(encoder_json_path, ": not valid JSON: ", e.what());
  }
  BRAID_CHECK(encoder.is_object(), encoder_json_path, ": expected a JSON object of token -> id");

  // vocab.bpe: a "#version" line, then one merge "LEFT RIGHT" per line, by rank.
  struct MergeLine {
    std::string left, right;
    size_t line;
  };
  std::vector<MergeLine> merge_lines;
  std::set<std::string> merge_results;  // the concatenations
  std::string vocab_text = read_file(vocab_bpe_path);
  std::vector<std::string_view> lines = split_lines(vocab_text);
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    if (line.empty() || (i == 0 && line.starts_with("#version"))) continue;
    size_t space = line.find(' ');
    bool two_parts = space != std::string_view::npos && space > 0 && space + 1 < line.size() &&
                     line.find(' ', space + 1) == std::string_view::npos;
    BRAID_CHECK(two_parts, vocab_bpe_path, ":", i + 1, ": expected two tokens separated by one space, got '",
                line, "'");
    MergeLine merge{std::string(line.substr(0, space)), std::string(line.substr(space + 1)), i + 1};
    merge_results.insert(merge.left + merge.right);
    merge_lines.push_back(std::move(merge));
  }

  // encoder.json holds the 256 bytes, the merge results, and specials (anything else, e.g. <|endoftext|>).
  auto impl = std::make_shared<Impl>();
  size_t size = encoder.size();
  impl->token_bytes.resize(size);
  impl->is_special.assign(size, false);
  std::vector<bool> filled(size, false);
  std::map<std::string, uint32_t> ids_by_name;
  for (const auto& [name, value] : encoder.items()) {
    BRAID_CHECK(value.is_number_unsigned(), encoder_json_path, ": the id of token '", name,
                "' is not a non-negative integer");
    uint64_t id = value.get<uint64_t>();
    std::string bytes;
    bool ordinary = gpt2_token_bytes(name, bytes) && (bytes.size() == 1 || merge_results.count(name));
    if (!ordinary) impl->specials.emplace(name, static_cast<uint32_t>(id));
    place_token(*impl, filled, encoder_json_path, id, ordinary ? bytes : name, !ordinary);
    ids_by_name.emplace(name, static_cast<uint32_t>(id));
  }
  impl->check_complete(encoder_json_path);
  for (uint32_t id = 0; id < size; ++id)
    if (!impl->is_special[id] && impl->token_bytes[id].size() == 1)
      impl->byte_ids[static_cast<unsigned char>(impl->token_bytes[id][0])] = id;

  auto id_of = [&](const std::string& name, size_t line) {
    auto it = ids_by_name.find(name);
    BRAID_CHECK(it != ids_by_name.end(), vocab_bpe_path, ":", line, ": token '", name, "' is not in ",
                encoder_json_path);
    return it->second;
  };
  for (uint32_t rank = 0; rank < merge_lines.size(); ++rank) {
    const MergeLine& merge = merge_lines[rank];
    uint32_t left = id_of(merge.left, merge.line), right = id_of(merge.right, merge.line);
    uint32_t result = id_of(merge.left + merge.right, merge.line);
    bool fresh = impl->merges.emplace(pair_key(left, right), Merge{rank, result}).second;
    BRAID_CHECK(fresh, vocab_bpe_path, ":", merge.line, ": the merge '", merge.left, " ", merge.right,
                "' appears twice");
  }
  return Tokenizer(impl);
}

namespace {

// Lines "<base64 bytes> <rank>"; `first_line` numbers them in messages.
std::vector<std::pair<uint64_t, std::string>> parse_rank_lines(const std::string& path,
                                                               const std::vector<std::string_view>& lines) {
  std::vector<std::pair<uint64_t, std::string>> ranked;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    if (line.empty()) continue;
    size_t space = line.find(' ');
    std::string bytes;
    bool ok = space != std::string_view::npos && base64_decode(line.substr(0, space), bytes);
    std::string_view rank_text = ok ? line.substr(space + 1) : std::string_view{};
    uint64_t rank = 0;
    ok = ok && !rank_text.empty() && rank_text.size() <= 10 &&
         std::all_of(rank_text.begin(), rank_text.end(), [](char c) { return c >= '0' && c <= '9'; });
    for (char c : rank_text) rank = rank * 10 + (c - '0');
    BRAID_CHECK(ok, path, ":", i + 1, ": expected '<base64 bytes> <rank>', got '", line.substr(0, 80), "'");
    ranked.emplace_back(rank, std::move(bytes));
  }
  return ranked;
}

}  // namespace

Tokenizer Tokenizer::load_tiktoken(const std::string& path, const std::map<std::string, uint32_t>& specials) {
  std::string text = read_file(path);
  return Tokenizer(build_ranked(path, parse_rank_lines(path, split_lines(text)), specials));
}

Tokenizer Tokenizer::from_ranks(std::vector<std::string> tokens, const std::map<std::string, uint32_t>& specials) {
  std::vector<std::pair<uint64_t, std::string>> ranked;
  ranked.reserve(tokens.size());
  for (size_t rank = 0; rank < tokens.size(); ++rank) ranked.emplace_back(rank, std::move(tokens[rank]));
  return Tokenizer(build_ranked("from_ranks", std::move(ranked), specials));
}

// Our format: tiktoken's rank lines (rank = id), then one JSON line {"<special>": id, ...}.
Tokenizer Tokenizer::open(const std::string& path) {
  BRAID_CHECK(std::filesystem::exists(path), path, ": no such vocabulary file or directory");
  if (std::filesystem::is_directory(path)) return load_gpt2(path + "/encoder.json", path + "/vocab.bpe");
  return load(path);
}

Tokenizer Tokenizer::load(const std::string& path) {
  std::string text = read_file(path);
  std::vector<std::string_view> lines = split_lines(text);
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  BRAID_CHECK(!lines.empty() && lines.back().starts_with("{"), path,
              ": the last line must be the JSON object of special tokens (as Tokenizer::save writes)");
  std::map<std::string, uint32_t> specials;
  try {
    nlohmann::json specials_json = nlohmann::json::parse(lines.back());
    BRAID_CHECK(specials_json.is_object(), path, ":", lines.size(), ": the special tokens line is not a JSON object");
    for (const auto& [name, id] : specials_json.items()) {
      BRAID_CHECK(id.is_number_unsigned(), path, ":", lines.size(), ": the id of special '", name,
                  "' is not a non-negative integer");
      specials.emplace(name, id.get<uint32_t>());
    }
  } catch (const nlohmann::json::exception& e) {
    BRAID_FAIL(path, ":", lines.size(), ": not a JSON object of special tokens: ", e.what());
  }
  lines.pop_back();
  return Tokenizer(build_ranked(path, parse_rank_lines(path, lines), specials));
}

void Tokenizer::save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary);
  BRAID_CHECK(out, path, ": cannot open for writing");
  nlohmann::json specials = nlohmann::json::object();
  for (size_t id = 0; id < impl_->token_bytes.size(); ++id) {
    if (impl_->is_special[id])
      specials[impl_->token_bytes[id]] = id;
    else
      out << base64_encode(impl_->token_bytes[id]) << ' ' << id << '\n';
  }
  out << specials.dump() << '\n';
  out.close();
  BRAID_CHECK(out, path, ": write failed");
}

// ---------------------------------------------------------------------------------------------
// Encoding and decoding
// ---------------------------------------------------------------------------------------------

std::vector<uint32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<uint32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  for (size_t pos = 0; pos < text.size();) {
    size_t end = pretoken_end(text, pos);
    impl_->append_piece_ids(text.substr(pos, end - pos), ids);
    pos = end;
  }
  return ids;
}

std::vector<uint32_t> Tokenizer::encode_with_specials(std::string_view text) const {
  std::vector<uint32_t> ids;
  size_t pos = 0;
  while (true) {
    // The next special occurrence; the longest name wins where two start at the same byte.
    size_t found = std::string_view::npos;
    const std::pair<const std::string, uint32_t>* special = nullptr;
    for (const auto& entry : impl_->specials) {
      size_t at = text.find(entry.first, pos);
      if (at < found || (at == found && at != std::string_view::npos && entry.first.size() > special->first.size())) {
        found = at;
        special = &entry;
      }
    }
    std::vector<uint32_t> ordinary = encode(text.substr(pos, found == std::string_view::npos ? found : found - pos));
    ids.insert(ids.end(), ordinary.begin(), ordinary.end());
    if (special == nullptr) return ids;
    ids.push_back(special->second);
    pos = found + special->first.size();
  }
}

std::string Tokenizer::decode(const std::vector<uint32_t>& ids) const {
  std::string text;
  for (uint32_t id : ids) {
    BRAID_CHECK(id < impl_->token_bytes.size(), "decode: token id ", id, " is outside the vocabulary of ",
                impl_->token_bytes.size());
    text += impl_->token_bytes[id];
  }
  return text;
}

size_t Tokenizer::vocab_size() const { return impl_->token_bytes.size(); }

bool Tokenizer::has_special(const std::string& name) const { return impl_->specials.count(name) > 0; }

uint32_t Tokenizer::special_id(const std::string& name) const {
  auto it = impl_->specials.find(name);
  BRAID_CHECK(it != impl_->specials.end(), "the tokenizer has no special token '", name, "'");
  return it->second;
}

uint32_t Tokenizer::bos_id() const { return special_id("<|endoftext|>"); }

uint32_t Tokenizer::eos_id() const { return special_id("<|endoftext|>"); }

}  // namespace braid
