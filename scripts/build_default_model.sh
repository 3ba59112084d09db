#!/usr/bin/env bash
# Reproduce the shipped default model zh-fast (about 10 minutes for the word
# vectors and 15-20 for each of the two members on 2 cores):
#   bash scripts/build_default_model.sh
# zh-fast is an ensemble (`sentiscore ensemble`) of two wide-deep models
# trained on the same rows with the same settings but one: in the first the
# BiLSTM learns to correct the n-gram path (the `wd-idf` recipe, zh-fast until
# 2026-12-02), in the second it learns the labels alone (`wd-independent`).
# Their average was measured in bench/loso_ensembles.py (`idf+ind`, BENCHMARKS.md:
# "Out of domain, 2026-12-02 (night)").
# Data: both labelled files (train split only; the dev split is never trained
# on) and, for the word vectors, the unlabelled corpus alone.
set -euo pipefail
shared=${SHARED:-../shared/data}
python scripts/split_data.py "$shared/sentiment_train.tsv" "$shared/sentiment_extra.tsv" --out build/splits-all
[ -f build/vectors/corpus-96/vectors.npy ] || sentiscore vectors train "$shared/corpus/corpus.parquet" --out build/vectors/corpus-96
recipe=(build/splits-all/train.parquet --dev build/splits-all/dev.parquet --arch wide-deep --epochs 4 --patience 1 --seed 13
        --vectors build/vectors/corpus-96 --no-adapt-vectors --class-weights none --wide-weighting idf --wide-buckets 1048576 --wide-c 8)
sentiscore train "${recipe[@]}" --out build/models/zh-fast-prefit --name zh-fast
sentiscore train "${recipe[@]}" --out build/models/zh-fast-independent --name zh-fast-independent --wide-training independent
sentiscore ensemble build/models/zh-fast-prefit build/models/zh-fast-independent --out build/models/zh-fast --name zh-fast \
  --dev build/splits-all/dev.parquet
rm -rf sentiscore/models/zh-fast
cp -r build/models/zh-fast sentiscore/models/zh-fast
sentiscore info zh-fast
