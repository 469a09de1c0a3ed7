// Trains a byte-level BPE vocabulary on documents, GPT-2 style: documents are split by GPT-2's
// pre-tokenization rule (split_pretokens), each distinct piece is a word weighted by how often it
// occurs, and merges are chosen greedily: the adjacent pair with the highest total count is merged
// everywhere (left to right, without overlap); ties go to the smallest (left id, right id).
// Ids 0..255 are the single bytes (id = byte value), then the merge results in the order they were
// made, then <|endoftext|>. Pairs never straddle documents or pieces.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "tools/tokenizer.h"

namespace braid {

// `vocab_size` counts the 256 bytes, the merges and <|endoftext|> (so at least 257). Training stops
// early, with a smaller vocabulary, when no adjacent pair is left to merge.
Tokenizer train_bpe(const std::vector<std::string>& documents, size_t vocab_size);

}  // namespace braid
