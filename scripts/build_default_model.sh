#!/usr/bin/env bash
# Reproduce the shipped default model zh-fast (about 10 minutes for the word
# vectors and 20-30 for the model on 2 cores):
#   bash scripts/build_default_model.sh
# Data: both labelled files (train split only; the dev split is never trained
# on) and, for the word vectors, the unlabelled corpus alone (the recipe the
# leave-one-source-out twins in bench/loso.py were measured with; `wd-idf` in
# the README's 2026-12-01 table).
set -euo pipefail
shared=${SHARED:-../shared/data}
python scripts/split_data.py "$shared/sentiment_train.tsv" "$shared/sentiment_extra.tsv" --out build/splits-all
[ -f build/vectors/corpus-96/vectors.npy ] || sentiscore vectors train "$shared/corpus/corpus.parquet" --out build/vectors/corpus-96
sentiscore train build/splits-all/train.parquet --out build/models/zh-fast --name zh-fast \
  --dev build/splits-all/dev.parquet --arch wide-deep --epochs 4 --patience 1 --seed 13 \
  --vectors build/vectors/corpus-96 --class-weights none \
  --wide-weighting idf --wide-buckets 1048576 --wide-c 8
rm -rf sentiscore/models/zh-fast
cp -r build/models/zh-fast sentiscore/models/zh-fast
sentiscore info zh-fast
