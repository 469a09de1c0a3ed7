// The oracle of test_tokenizer_oracle.cpp: encodes every document of the nlp-corpus package with the
// gpt-3-encoder package's own encode(), reading the corpus as the test does (builds/doc-N.json in
// increasing N, each a JSON array of document strings). Writes per document, in order, a
// little-endian uint32 count and then the ids (0xFFFFFFFF where encode() yields no id).
// Usage: node gpt2_oracle.js GPT_3_ENCODER_DIR NLP_CORPUS_BUILDS_DIR OUT_FILE
'use strict';
const fs = require('fs');
const path = require('path');

const [encoderDir, corpusDir, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error('usage: node gpt2_oracle.js GPT_3_ENCODER_DIR NLP_CORPUS_BUILDS_DIR OUT_FILE');
  process.exit(2);
}
const { encode } = require(path.resolve(encoderDir));

const docNumber = name => Number(/^doc-(\d+)\.json$/.exec(name)[1]);
const files = fs.readdirSync(corpusDir).filter(name => /^doc-\d+\.json$/.test(name))
    .sort((a, b) => docNumber(a) - docNumber(b));

const words = [];
for (const name of files) {
  for (const doc of JSON.parse(fs.readFileSync(path.join(corpusDir, name), 'utf8'))) {
    const ids = encode(doc);
    words.push(ids.length);
    for (const id of ids) words.push(Number.isInteger(id) ? id : 0xFFFFFFFF);
  }
}
const out = Buffer.alloc(4 * words.length);
words.forEach((word, i) => out.writeUInt32LE(word, 4 * i));
fs.writeFileSync(outPath, out);
