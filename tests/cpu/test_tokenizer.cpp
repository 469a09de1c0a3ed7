// The byte-level BPE tokenizer without data/: GPT-2's pre-tokenization on hand-checked cases (the
// expected splits are what the reference JavaScript regex gives), the byte alphabet, hand-written
// GPT-2 and tiktoken vocabularies, special tokens, BPE training with merges worked out by hand, and
// decode(encode(x)) == x on random bytes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "runtime/error.h"
#include "tools/bpe_trainer.h"
#include "tools/tokenizer.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> pieces(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view piece : split_pretokens(text)) out.emplace_back(piece);
  return out;
}

using Pieces = std::vector<std::string>;

TEST(Pretokenize, ContractionsAreTheirOwnPiecesOnlyInLowerCase) {
  EXPECT_EQ(pieces("I'm here, they'll go; we've it's"),
            (Pieces{"I", "'m", " here", ",", " they", "'ll", " go", ";", " we", "'ve", " it", "'s"}));
  EXPECT_EQ(pieces("don't DON'T"), (Pieces{"don", "'t", " DON", "'", "T"}));
  EXPECT_EQ(pieces("'re'd"), (Pieces{"'re", "'d"}));
  EXPECT_EQ(pieces(" 's"), (Pieces{" '", "s"}));
  EXPECT_EQ(pieces("x 'tis"), (Pieces{"x", " '", "tis"}));
}

TEST(Pretokenize, LettersNumbersAndPunctuationTakeOneLeadingSpace) {
  EXPECT_EQ(pieces("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(pieces("abc123 456 7.5"), (Pieces{"abc", "123", " 456", " 7", ".", "5"}));
  EXPECT_EQ(pieces("1,000,000.50"), (Pieces{"1", ",", "000", ",", "000", ".", "50"}));
  EXPECT_EQ(pieces("Wait!!! (yes) ...ok"), (Pieces{"Wait", "!!!", " (", "yes", ")", " ...", "ok"}));
}

TEST(Pretokenize, WhitespaceRunLeavesItsLastCharacterToANonSpace) {
  EXPECT_EQ(pieces("a  b"), (Pieces{"a", " ", " b"}));
  EXPECT_EQ(pieces("a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(pieces("a\n\nb"), (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(pieces("a \n b"), (Pieces{"a", " \n", " b"}));
  EXPECT_EQ(pieces("x\r\n\r\ny"), (Pieces{"x", "\r\n\r", "\n", "y"}));
  EXPECT_EQ(pieces("  x"), (Pieces{" ", " x"}));
  EXPECT_EQ(pieces("\t\tx"), (Pieces{"\t", "\t", "x"}));
  // At the end of the text the whole run is one piece.
  EXPECT_EQ(pieces("end   "), (Pieces{"end", "   "}));
  EXPECT_EQ(pieces("   "), (Pieces{"   "}));
  EXPECT_EQ(pieces("  \n"), (Pieces{"  \n"}));
  EXPECT_TRUE(pieces("").empty());
}

TEST(Pretokenize, UnicodeLettersNumbersSpacesAndSymbols) {
  EXPECT_EQ(pieces("naïve café Ωmega"), (Pieces{"naïve", " café", " Ωmega"}));
  EXPECT_EQ(pieces("e\u0301x"), (Pieces{"e", "\u0301", "x"}));  // a combining mark is not a letter
  EXPECT_EQ(pieces("日本語です。"), (Pieces{"日本語です", "。"}));
  EXPECT_EQ(pieces("x² ½ ٣٤"), (Pieces{"x", "²", " ½", " ٣٤"}));
  EXPECT_EQ(pieces("hi 🙂🙂! 🙂 ok"), (Pieces{"hi", " 🙂🙂!", " 🙂", " ok"}));
  // Only U+0020 joins the next piece; other spaces stand alone.
  EXPECT_EQ(pieces("a\u00a0b"), (Pieces{"a", "\u00a0", "b"}));
  EXPECT_EQ(pieces("a\u3000\u3000b"), (Pieces{"a", "\u3000", "\u3000", "b"}));
  EXPECT_EQ(pieces("a \u3000b"), (Pieces{"a", " ", "\u3000", "b"}));
  EXPECT_EQ(pieces("a\ufeffb"), (Pieces{"a", "\ufeff", "b"}));  // JavaScript's \s includes U+FEFF
  EXPECT_EQ(pieces("a\u0085b"), (Pieces{"a", "\u0085", "b"}));  // ... but not U+0085
}

TEST(Pretokenize, InvalidUtf8BytesArePunctuation) {
  EXPECT_EQ(pieces("ab\xff" "cd"), (Pieces{"ab", "\xff", "cd"}));
  EXPECT_EQ(pieces(" \xff\xfe!x"), (Pieces{" \xff\xfe!", "x"}));
  EXPECT_EQ(pieces("\xe2\x82x"), (Pieces{"\xe2\x82", "x"}));            // truncated sequence
  EXPECT_EQ(pieces("a\xed\xa0\x80" "b"), (Pieces{"a", "\xed\xa0\x80", "b"}));  // an encoded surrogate
  EXPECT_EQ(pieces("a\xc3\xa9\xc3"), (Pieces{"a\xc3\xa9", "\xc3"}));    // é, then a lone lead byte
  EXPECT_EQ(pieces("\xc0\xaf" "1"), (Pieces{"\xc0\xaf", "1"}));          // overlong '/'
}

TEST(ByteAlphabet, MatchesGpt2) {
  EXPECT_EQ(gpt2_byte_to_code_point('!'), U'!');
  EXPECT_EQ(gpt2_byte_to_code_point('A'), U'A');
  EXPECT_EQ(gpt2_byte_to_code_point('~'), U'~');
  EXPECT_EQ(gpt2_byte_to_code_point(0xA1), U'\u00A1');
  EXPECT_EQ(gpt2_byte_to_code_point(0xFF), U'\u00FF');
  EXPECT_EQ(gpt2_byte_to_code_point(0x00), U'\u0100');
  EXPECT_EQ(gpt2_byte_to_code_point('\n'), U'\u010A');  // "Ċ"
  EXPECT_EQ(gpt2_byte_to_code_point(' '), U'\u0120');   // "Ġ"
  EXPECT_EQ(gpt2_byte_to_code_point(0x7F), U'\u0121');
  EXPECT_EQ(gpt2_byte_to_code_point(0xA0), U'\u0142');
  EXPECT_EQ(gpt2_byte_to_code_point(0xAD), U'\u0143');
  std::set<char32_t> seen;
  for (int byte = 0; byte < 256; ++byte) {
    char32_t cp = gpt2_byte_to_code_point(static_cast<uint8_t>(byte));
    EXPECT_TRUE(cp >= 0x21 && cp <= 0x143) << byte;
    seen.insert(cp);
  }
  EXPECT_EQ(seen.size(), 256u);
}

// ---------------------------------------------------------------------------------------------
// Hand-written vocabularies
// ---------------------------------------------------------------------------------------------

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("braid_tokenizer_test_" + std::to_string(getpid()))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name, const std::string& contents) const {
    std::string path = (path_ / name).string();
    std::ofstream(path, std::ios::binary) << contents;
    return path;
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// GPT-2's printable bytes stand for themselves; the others, in increasing order, for U+0100 onward.
std::string gpt2_char(int byte) {
  auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; };
  char32_t cp = byte;
  if (!printable(byte)) {
    cp = 0x100;
    for (int b = 0; b < byte; ++b) cp += !printable(b);
  }
  if (cp < 0x80) return std::string(1, static_cast<char>(cp));
  return {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
}

// encoder.json: byte b has id b, then `extra` tokens in order; vocab.bpe lists `merges` by rank.
struct Gpt2Files {
  std::string encoder_json, vocab_bpe;
};
Gpt2Files write_gpt2(const TempDir& dir, const std::string& tag, const std::vector<std::string>& extra,
                     const std::vector<std::string>& merges) {
  nlohmann::json encoder = nlohmann::json::object();
  for (int byte = 0; byte < 256; ++byte) encoder[gpt2_char(byte)] = byte;
  for (size_t i = 0; i < extra.size(); ++i) encoder[extra[i]] = 256 + i;
  std::string bpe = "#version: 0.2\n";
  for (const std::string& merge : merges) bpe += merge + "\n";
  return {dir.file(tag + "_encoder.json", encoder.dump()), dir.file(tag + "_vocab.bpe", bpe)};
}

TEST(Gpt2Vocabulary, MergesApplyByRankAndOnlyAsListed) {
  TempDir dir;
  // "abc" is a token, but only "ab c" makes it: after "b c" (rank 0) it stays "a" + "bc".
  Gpt2Files files = write_gpt2(dir, "bc_first", {"bc", "ab", "Ġa", "abc", "<|endoftext|>"},
                               {"b c", "a b", "Ġ a", "ab c"});
  Tokenizer tokenizer = Tokenizer::load_gpt2(files.encoder_json, files.vocab_bpe);
  EXPECT_EQ(tokenizer.vocab_size(), 261u);
  EXPECT_EQ(tokenizer.eos_id(), 260u);
  EXPECT_EQ(tokenizer.bos_id(), 260u);
  EXPECT_EQ(tokenizer.encode("abc"), (std::vector<uint32_t>{'a', 256}));
  EXPECT_EQ(tokenizer.encode("abd"), (std::vector<uint32_t>{257, 'd'}));
  EXPECT_EQ(tokenizer.encode(" abc"), (std::vector<uint32_t>{258, 256}));
  EXPECT_EQ(tokenizer.encode("x abd"), (std::vector<uint32_t>{'x', ' ', 257, 'd'}));  // "a b" outranks "Ġ a"
  EXPECT_EQ(tokenizer.decode({259, 258, 260}), "abc a<|endoftext|>");

  // With "a b" first, "ab c" applies.
  Gpt2Files swapped = write_gpt2(dir, "ab_first", {"bc", "ab", "Ġa", "abc", "<|endoftext|>"},
                                 {"a b", "b c", "Ġ a", "ab c"});
  Tokenizer ab_first = Tokenizer::load_gpt2(swapped.encoder_json, swapped.vocab_bpe);
  EXPECT_EQ(ab_first.encode("abc"), (std::vector<uint32_t>{259}));
  EXPECT_EQ(ab_first.encode("abcbc"), (std::vector<uint32_t>{259, 256}));
}

TEST(Gpt2Vocabulary, BadFilesNameTheProblem) {
  TempDir dir;
  Gpt2Files missing_result = write_gpt2(dir, "missing", {"ab"}, {"a b", "x y"});
  try {
    Tokenizer::load_gpt2(missing_result.encoder_json, missing_result.vocab_bpe);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("vocab.bpe:3: token 'xy' is not in"), std::string::npos) << e.message();
  }
  Gpt2Files malformed = write_gpt2(dir, "malformed", {"ab"}, {"a b c"});
  try {
    Tokenizer::load_gpt2(malformed.encoder_json, malformed.vocab_bpe);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("vocab.bpe:2: expected two tokens"), std::string::npos) << e.message();
  }
  nlohmann::json no_newline = nlohmann::json::object();
  for (int byte = 0; byte < 256; ++byte)
    if (byte != '\n') no_newline[gpt2_char(byte)] = byte - (byte > '\n');
  std::string encoder = dir.file("no_newline.json", no_newline.dump());
  std::string bpe = dir.file("empty.bpe", "#version: 0.2\n");
  try {
    Tokenizer::load_gpt2(encoder, bpe);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("no token for the single byte 0xa"), std::string::npos) << e.message();
  }
}

// Standard base64, written here independently of the tokenizer's.
std::string base64(const std::string& bytes) {
  const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    unsigned value = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) value |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) value |= static_cast<unsigned char>(bytes[i + 2]);
    out += alphabet[(value >> 18) & 63];
    out += alphabet[(value >> 12) & 63];
    out += i + 1 < bytes.size() ? alphabet[(value >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? alphabet[value & 63] : '=';
  }
  return out;
}

TEST(TiktokenVocabulary, LoadSaveLoadKeepsRanksAndSpecials) {
  ASSERT_EQ(base64("!"), "IQ==");
  ASSERT_EQ(base64(" the"), "IHRoZQ==");
  ASSERT_EQ(base64(std::string(1, '\xff')), "/w==");
  TempDir dir;
  // Ranks: the bytes (rank = byte value), then "he", " t", " the", "the".
  std::string ranks;
  for (int byte = 0; byte < 256; ++byte) ranks += base64(std::string(1, static_cast<char>(byte))) + " " + std::to_string(byte) + "\n";
  for (const auto& [token, rank] : std::vector<std::pair<std::string, int>>{{"he", 256}, {" t", 257}, {" the", 258}, {"the", 259}})
    ranks += base64(token) + " " + std::to_string(rank) + "\n";
  std::string path = dir.file("vocab.tiktoken", ranks);
  Tokenizer tokenizer = Tokenizer::load_tiktoken(path, {{"<|endoftext|>", 260}});
  EXPECT_EQ(tokenizer.vocab_size(), 261u);
  // " the": "he" (256), then " t" (257) + "he" -> " the" (258); "the" would need rank 259 > 257.
  EXPECT_EQ(tokenizer.encode(" the"), (std::vector<uint32_t>{258}));
  EXPECT_EQ(tokenizer.encode("the"), (std::vector<uint32_t>{259}));
  EXPECT_EQ(tokenizer.encode("then"), (std::vector<uint32_t>{259, 'n'}));
  EXPECT_EQ(tokenizer.encode(" he"), (std::vector<uint32_t>{' ', 256}));

  std::string saved = dir.path("saved.tok");
  tokenizer.save(saved);
  EXPECT_EQ(read_file(saved), ranks + "{\"<|endoftext|>\":260}\n");
  Tokenizer reloaded = Tokenizer::load(saved);
  EXPECT_EQ(reloaded.vocab_size(), 261u);
  EXPECT_EQ(reloaded.eos_id(), 260u);
  for (std::string text : {" the", "the", "then the he", "<|endoftext|>"}) {
    EXPECT_EQ(reloaded.encode(text), tokenizer.encode(text)) << text;
    EXPECT_EQ(reloaded.encode_with_specials(text), tokenizer.encode_with_specials(text)) << text;
  }
}

TEST(TiktokenVocabulary, BadFilesNameTheLineOrId) {
  TempDir dir;
  std::string ranks;
  for (int byte = 0; byte < 256; ++byte) ranks += base64(std::string(1, static_cast<char>(byte))) + " " + std::to_string(byte) + "\n";
  try {
    Tokenizer::load_tiktoken(dir.file("bad_line.tiktoken", ranks + "aGU 256\n"), {});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("bad_line.tiktoken:257: expected '<base64 bytes> <rank>'"), std::string::npos)
        << e.message();
  }
  try {
    Tokenizer::load_tiktoken(dir.file("gap.tiktoken", ranks + base64("he") + " 300\n"), {});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("id 300 leaves a gap"), std::string::npos) << e.message();
  }
  try {
    Tokenizer::load_tiktoken(dir.file("twice.tiktoken", ranks + base64("he") + " 256\n"), {{"<|endoftext|>", 256}});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("id 256 is used twice"), std::string::npos) << e.message();
  }
}

TEST(SpecialTokens, MatchedOnlyByEncodeWithSpecials) {
  std::vector<std::string> tokens;
  for (int byte = 0; byte < 256; ++byte) tokens.emplace_back(1, static_cast<char>(byte));
  Tokenizer tokenizer = Tokenizer::from_ranks(tokens, {{"<|endoftext|>", 256}, {"<|end|>", 257}, {"<|end|>!", 258}});
  EXPECT_TRUE(tokenizer.has_special("<|end|>"));
  EXPECT_FALSE(tokenizer.has_special("<|start|>"));
  EXPECT_EQ(tokenizer.special_id("<|end|>!"), 258u);
  std::string text = "a<|endoftext|>b";
  std::vector<uint32_t> plain = tokenizer.encode(text);
  EXPECT_EQ(plain.size(), text.size());  // bytes only: this vocabulary has no merges
  for (uint32_t id : plain) EXPECT_LT(id, 256u);
  EXPECT_EQ(tokenizer.decode(plain), text);
  EXPECT_EQ(tokenizer.encode_with_specials(text), (std::vector<uint32_t>{'a', 256, 'b'}));
  EXPECT_EQ(tokenizer.encode_with_specials("<|end|><|endoftext|>"), (std::vector<uint32_t>{257, 256}));
  EXPECT_EQ(tokenizer.encode_with_specials("<|end|>!?"), (std::vector<uint32_t>{258, '?'}));  // the longest
  EXPECT_EQ(tokenizer.encode_with_specials("<|end"), (std::vector<uint32_t>{'<', '|', 'e', 'n', 'd'}));
  EXPECT_EQ(tokenizer.decode({'x', 257, 256}), "x<|end|><|endoftext|>");
  try {
    tokenizer.decode({259});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("token id 259 is outside the vocabulary of 259"), std::string::npos) << e.message();
  }
}

// ---------------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------------

std::vector<std::string> token_strings(const Tokenizer& tokenizer, uint32_t first, uint32_t end) {
  std::vector<std::string> out;
  for (uint32_t id = first; id < end; ++id) out.push_back(tokenizer.decode({id}));
  return out;
}

TEST(BpeTraining, FirstMergesMatchAHandCount) {
  // Pieces: "aaabdaaabac" x1, "xy" x1, " xy" x2. By hand:
  //   aa 4                                      -> 256 "aa"
  //   xy 3 | aa+a 2, a+b 2, " "+x 2             -> 257 "xy"
  //   " "+xy 2, aa+a 2, a+b 2: smallest left id -> 258 " xy" (' ' = 32)
  //   a+b 2, aa+a 2: left 97 < 256              -> 259 "ab"
  //   aa+ab 2                                   -> 260 "aaab"
  //   all 1: aaab+d, d+aaab, aaab+a, a+c        -> 261 "ac" (left 97)
  //   aaab+d, d+aaab, aaab+ac                   -> 262 "daaab" (left 100)
  Tokenizer tokenizer = train_bpe({"aaabdaaabac", "xy xy xy"}, 264);
  EXPECT_EQ(tokenizer.vocab_size(), 264u);
  EXPECT_EQ(tokenizer.eos_id(), 263u);
  EXPECT_EQ(token_strings(tokenizer, 256, 263),
            (std::vector<std::string>{"aa", "xy", " xy", "ab", "aaab", "ac", "daaab"}));
  EXPECT_EQ(token_strings(tokenizer, 'a', 'c'), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(tokenizer.encode("aaabdaaabac"), (std::vector<uint32_t>{260, 262, 261}));
  EXPECT_EQ(tokenizer.encode("xy xy"), (std::vector<uint32_t>{257, 258}));
  EXPECT_EQ(tokenizer.encode_with_specials("ab<|endoftext|>"), (std::vector<uint32_t>{259, 263}));
}

TEST(BpeTraining, StopsWhenNothingIsLeftToMerge) {
  Tokenizer tokenizer = train_bpe({"abab"}, 1000);
  // abab -> "ab" (2), then "abab": two merges, then <|endoftext|>.
  EXPECT_EQ(tokenizer.vocab_size(), 259u);
  EXPECT_EQ(token_strings(tokenizer, 256, 258), (std::vector<std::string>{"ab", "abab"}));
  EXPECT_EQ(tokenizer.encode("abab"), (std::vector<uint32_t>{257}));
  try {
    train_bpe({"abab"}, 256);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("vocab size 256 is below 257"), std::string::npos) << e.message();
  }
}

TEST(BpeTraining, SavedVocabularyEncodesTheSame) {
  std::vector<std::string> documents = {"the cat sat on the mat", "the dog's bone, the cat's toy!",
                                        "café naïve 日本 2024 1999", "the   end\n\nthe start"};
  Tokenizer tokenizer = train_bpe(documents, 300);
  TempDir dir;
  tokenizer.save(dir.path("trained.tok"));
  Tokenizer reloaded = Tokenizer::load(dir.path("trained.tok"));
  EXPECT_EQ(reloaded.vocab_size(), tokenizer.vocab_size());
  for (const std::string& document : documents) {
    EXPECT_EQ(reloaded.encode(document), tokenizer.encode(document));
    EXPECT_LT(tokenizer.encode(document).size(), document.size() / 2) << document;  // it learned the words
  }
}

// ---------------------------------------------------------------------------------------------
// Round trips on random bytes
// ---------------------------------------------------------------------------------------------

// Text made of fragments that stress the rule: letters, digits, spaces, contractions, multi-byte
// letters and symbols, and bytes that are not UTF-8 (lone continuation bytes, truncated sequences,
// encoded surrogates, overlong forms), or plain uniform bytes.
std::string random_text(std::mt19937_64& rng, size_t length, bool uniform) {
  static const std::vector<std::string> fragments = {
      "a", "Z", "q", "7", "0", " ", " ", "  ", "\n", "\t", "\r\n", "'", "'s", "'ll", ".", ",", "!", "é", "ß",
      "Ω", "日", "٣", "²", "🙂", "\u0301", "\u00a0", "\u3000", "\xff", "\x80", "\xc3", "\xe2\x82", "\xed\xa0\x80",
      "\xc0\xaf", "\xf4\x90\x80\x80", std::string(1, '\0')};
  std::string text;
  while (text.size() < length) {
    if (uniform) {
      text += static_cast<char>(rng() & 0xFF);
    } else {
      text += fragments[rng() % fragments.size()];
    }
  }
  text.resize(length);  // may cut a fragment: more invalid sequences
  return text;
}

void expect_round_trips(const Tokenizer& tokenizer, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t length = 0; length < 400; length += 1 + length / 16) {
    for (bool uniform : {false, true}) {
      std::string text = random_text(rng, length, uniform);
      std::string joined;
      for (std::string_view piece : split_pretokens(text)) {
        EXPECT_FALSE(piece.empty());
        joined += piece;
      }
      EXPECT_EQ(joined, text);
      std::vector<uint32_t> ids = tokenizer.encode(text);
      EXPECT_LE(ids.size(), text.size());
      for (uint32_t id : ids) EXPECT_LT(id, tokenizer.vocab_size());
      ASSERT_EQ(tokenizer.decode(ids), text) << "length " << length << (uniform ? " uniform" : " fragments");
      ASSERT_EQ(tokenizer.decode(tokenizer.encode_with_specials(text)), text);
    }
  }
  std::string long_text = random_text(rng, 200000, false);
  EXPECT_EQ(tokenizer.decode(tokenizer.encode(long_text)), long_text);
  std::string one_long_piece(1 << 17, 'a');  // one piece: the merge loop must not be quadratic
  EXPECT_EQ(tokenizer.decode(tokenizer.encode(one_long_piece)), one_long_piece);
}

TEST(RoundTrip, TrainedVocabularyOnRandomBytes) {
  std::mt19937_64 rng(41);
  std::vector<std::string> documents;
  for (int i = 0; i < 200; ++i) documents.push_back(random_text(rng, 300, i % 4 == 0));
  Tokenizer tokenizer = train_bpe(documents, 1000);
  EXPECT_EQ(tokenizer.vocab_size(), 1000u);
  expect_round_trips(tokenizer, 42);
}

TEST(RoundTrip, Gpt2FormatVocabularyOnRandomBytes) {
  TempDir dir;
  Gpt2Files files = write_gpt2(dir, "tiny", {"bc", "ab", "Ġa", "abc", "aa", "aaaa", "<|endoftext|>"},
                               {"b c", "a b", "Ġ a", "ab c", "a a", "aa aa"});
  expect_round_trips(Tokenizer::load_gpt2(files.encoder_json, files.vocab_bpe), 43);
}

TEST(RoundTrip, ConcurrentEncodesMatchSerialOnes) {
  std::mt19937_64 rng(44);
  std::vector<std::string> documents;
  for (int i = 0; i < 100; ++i) documents.push_back(random_text(rng, 200, false));
  Tokenizer tokenizer = train_bpe(documents, 600);
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) texts.push_back(random_text(rng, 2000, i % 2 == 0));
  std::vector<std::vector<uint32_t>> serial, concurrent(texts.size());
  for (const std::string& text : texts) serial.push_back(tokenizer.encode(text));
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = t; i < texts.size(); i += 4) concurrent[i] = tokenizer.encode(texts[i]);
    });
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(concurrent, serial);
}

}  // namespace
}  // namespace braid
